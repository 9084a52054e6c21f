"""Gossip methods end to end (8 peers in memory through the real runner) and piece by piece."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spargo.node.checkpoint import load_checkpoint, save_checkpoint
from spargo.node.methods import Method, MethodContext, make_method, method_names
from spargo.node.methods.choco import ChocoMethod
from spargo.node.methods.payloads import (
    Model,
    Payload,
    Received,
    ResyncAsk,
    StreamCopy,
    StreamDelta,
)
from spargo.node.methods.registry import METHODS, node_methods
from spargo.node.payload import PayloadMismatch, from_message, to_message
from spargo.node.tasks import load_task
from spargo.protocol import (
    Decoder,
    Delta,
    Envelope,
    FullModel,
    Limits,
    MaskedUpdate,
    NamedTensor,
    Thresholds,
    encode,
)
from spargo.sims.runner import SimResult, run
from spargo.sims.scenario import Scenario

ROUNDS = 10
#: Accuracy floors on IID digits, one per registered method (a new method needs one).
FLOORS = {
    "dense": 0.85,
    "vc": 0.85,
    "pushsum": 0.85,
    "pushsum_rs": 0.85,
    "fedsparsify": 0.8,
    "choco": 0.8,
    "spafl": 0.75,
    "allreduce": 0.85,
    "local": 0.75,  # one peer's eighth of digits, alone
    "tracking": 0.85,
    "cgt": 0.75,
    "cgt_masked": 0.75,
}
OPTIONS: dict[str, dict[str, Any]] = {"spafl": {"weights_every": 0}}


def _scenario(method: str, **kw: Any) -> Scenario:
    base: dict[str, Any] = {
        "nodes": 8,
        "topology": "ring",
        "rounds": ROUNDS,
        "seed": 0,
        "method": method,
        "method_options": OPTIONS.get(method, {}),
        "partition": "iid",
        "eval_every": 1000,
    }
    base.update(kw)
    return Scenario(**base)


def test_every_registered_method_has_a_floor() -> None:
    assert set(FLOORS) == set(METHODS)


@pytest.fixture(scope="module")
def iid_runs() -> dict[str, SimResult]:
    torch.set_num_threads(1)
    return {method: run(_scenario(method)) for method in FLOORS}


@pytest.mark.parametrize("method", sorted(FLOORS))
def test_each_method_learns_digits(iid_runs: Mapping[str, SimResult], method: str) -> None:
    summary = iid_runs[method].summary
    assert summary["accuracy_mean"] >= FLOORS[method], summary
    assert summary["drops"] == {}


def test_sparse_methods_prune(iid_runs: Mapping[str, SimResult]) -> None:
    assert iid_runs["fedsparsify"].summary["density"] < 0.5
    assert iid_runs["spafl"].summary["density"] < 0.95


def test_spafl_thresholds_only_sends_under_5_percent_of_dense(
    iid_runs: Mapping[str, SimResult],
) -> None:
    spafl = iid_runs["spafl"].summary["bytes_sent_total"]
    dense = iid_runs["dense"].summary["bytes_sent_total"]
    assert spafl < 0.05 * dense


def test_spafl_with_weight_gossip_runs_two_messages_a_round() -> None:
    result = run(_scenario("spafl", rounds=4, method_options={"weights_every": 2}))
    assert result.summary["accuracy_on"] == "global"  # one declared basis for every method
    assert result.summary["accuracy_mean"] == result.summary["global_accuracy_mean"] >= 0.6
    assert result.summary["local_accuracy_mean"] is not None
    merged = [m.merge.get("weights_merged_peers") for m in result.rounds if m.round == 1]
    assert merged
    assert all(count == 2.0 for count in merged)


def test_vc_beats_dense_early_from_distinct_inits() -> None:
    def early(method: str) -> float:
        result = run(_scenario(method, rounds=4, distinct_init=True, eval_every=1))
        last = [m.global_accuracy for m in result.rounds if m.round == 3]
        return float(np.mean([a for a in last if a is not None]))

    assert early("vc") > early("dense") + 0.1


# --- methods driven directly ------------------------------------------------------------
def _ctx(peer: str, weights: Mapping[str, float], **options: Any) -> MethodContext:
    model = load_task("digits").model_factory(0)
    return MethodContext(model, peer, dict(weights), seed=0, rounds=10, options=options)


def _wire(
    sender: str, seq: int, sent_round: int, payload: Payload, receiver: Method, merge_round: int
) -> Received:
    """``payload`` as ``receiver``'s merge at ``merge_round`` gets it after the wire."""
    frame = encode(Envelope("t", sender, seq, sent_round, to_message(payload)))
    body = Decoder("t").decode(frame).body
    staleness = max(0, merge_round - sent_round)
    return Received(sender, from_message(body, receiver.signature()), staleness)


def _nudge(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def test_choco_resync_after_a_dropped_delta_restores_agreement() -> None:
    weights = {"a": 0.5, "b": 0.5}
    a = ChocoMethod(_ctx("a", weights))
    b = ChocoMethod(_ctx("b", weights))
    seq = 0

    def deliver(round_index: int, drop: bool = False) -> Any:
        nonlocal seq
        _nudge(a.ctx.model, round_index)
        b.outgoing(round_index, [])  # b's own stream: its public copy x̂_b
        sent = a.outgoing(round_index, ["b"])
        seq += 1
        received = [] if drop else [_wire("a", seq, round_index, sent[0][1], b, round_index)]
        return b.merge(round_index, received)

    deliver(0)
    deliver(1)
    _assert_copy_matches(b, a)
    deliver(2, drop=True)
    result = deliver(3)
    assert result.stats.gaps == 1
    assert "a" not in b.copies
    ((peer, ask),) = result.replies
    assert peer == "a"
    assert isinstance(ask, ResyncAsk)
    control = a.merge(3, [_wire("b", 1, 3, ask, a, 3)])  # on arrival, alone
    assert control.stats.merged_peers == 0
    assert not control.replies
    _nudge(a.ctx.model, 4)
    sent = a.outgoing(4, ["b"])
    assert isinstance(sent[0][1], StreamCopy)
    stats = b.merge(4, [_wire("a", 9, 4, sent[0][1], b, 4)]).stats
    assert stats.resyncs == 1
    _assert_copy_matches(b, a)
    stats = deliver(5).stats
    assert stats.gaps == 0
    assert stats.merged_peers == 1
    _assert_copy_matches(b, a)


def _assert_copy_matches(receiver: ChocoMethod, sender: ChocoMethod) -> None:
    assert sender.public is not None
    copy = receiver.copies[sender.ctx.peer_id]
    for name, value in sender.public.items():
        np.testing.assert_array_equal(copy[name], value)


@pytest.mark.parametrize("dtype", ["int8", "float16", "float32"])
def test_choco_randk_streams_agree_bit_for_bit(dtype: str) -> None:
    """The sender's x̂ grows by exactly what the receiver decodes (computed once, no second
    encoding), whatever the value codec."""
    weights = {"a": 0.5, "b": 0.5}
    options = {"compressor": "randk", "value_dtype": dtype, "ratio": 0.2}
    a = ChocoMethod(_ctx("a", weights, **options))
    b = ChocoMethod(_ctx("b", weights, **options))
    for r in range(4):
        _nudge(a.ctx.model, r)
        payload = a.outgoing(r, ["b"])[0][1]
        assert r == 0 or isinstance(payload, StreamDelta)
        b.merge(r, [_wire("a", r + 1, r, payload, b, r)])
    _assert_copy_matches(b, a)


def test_choco_refuses_a_stranger() -> None:
    a = ChocoMethod(_ctx("a", {"a": 0.5, "b": 0.5}))
    c = ChocoMethod(_ctx("c", {"c": 1.0}))
    copy = c.outgoing(0, ["a"])[0][1]
    stats = a.merge(0, [_wire("c", 1, 0, copy, a, 0)]).stats
    assert stats.rejected == 1
    assert "c" not in a.copies


@pytest.mark.parametrize("method", node_methods())
def test_method_state_round_trips_through_a_checkpoint(method: str, tmp_path: Path) -> None:
    weights = {"a": 0.5, "b": 0.5}
    a = make_method(method, _ctx("a", weights))
    b = make_method(method, _ctx("b", weights))
    for r in range(3):
        a.begin_round(r)
        b.begin_round(r)
        _nudge(a.ctx.model, r)
        _nudge(b.ctx.model, 100 + r)
        to_a = [_wire("b", r + 1, r, payload, a, r) for _, payload in b.outgoing(r, ["a"])]
        a.merge(r, to_a)
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"model": a.ctx.model.state_dict(), "method": a.state_dict()})
    state = load_checkpoint(path)
    fresh = make_method(method, _ctx("a", weights))
    fresh.ctx.model.load_state_dict(state["model"])
    fresh.load_state_dict(state["method"])
    _assert_same(a.state_dict(), fresh.state_dict())
    assert fresh.density() == pytest.approx(a.density())


def _assert_same(x: Any, y: Any) -> None:
    if isinstance(x, dict):
        assert set(x) == set(y)
        for key in x:
            _assert_same(x[key], y[key])
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y)
    else:
        assert x == y


@pytest.mark.parametrize("method", node_methods())
def test_the_seam_refuses_payloads_that_do_not_fit(method: str) -> None:
    """Wrong tensor names, a wrong threshold count and (where the decoder lets them through)
    NaN values are refused once, before any method sees them."""
    m = make_method(method, _ctx("a", {"a": 0.4, "b": 0.3, "c": 0.3}))
    wrong = (NamedTensor("nope", np.zeros(3, np.float32)),)
    bodies = [FullModel(wrong), MaskedUpdate(wrong), Delta(1, wrong), Thresholds(np.zeros(2))]
    nan = {n: np.full(s, np.nan, np.float32) for n, s in m.signature().shapes.items()}
    decoder = Decoder("t", Limits(allow_nonfinite=True))
    frame = encode(Envelope("t", "b", 1, 0, to_message(Model(nan))))
    bodies.append(decoder.decode(frame).body)
    for body in bodies:
        with pytest.raises(PayloadMismatch):
            from_message(body, m.signature(), check_finite=True)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid: .*robust"):
        make_method("dense", _ctx("a", {"a": 1.0}, weights_every=3))
    with pytest.raises(ValueError, match="must be a int"):
        make_method("spafl", _ctx("a", {"a": 1.0}, weights_every="often"))
    with pytest.raises(ValueError, match="trimmed:B"):
        make_method("vc", _ctx("a", {"a": 1.0}, robust="mean"))
    assert method_names() == [n for n, spec in METHODS.items() if not spec.simulation_only]
    assert "allreduce" not in method_names()


@pytest.mark.parametrize("robust", ["clip", "median", "trimmed:1", "trimmed:5"])
def test_robust_dense_ignores_a_wild_neighbour(robust: str) -> None:
    weights = {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
    m = make_method("dense", _ctx("a", weights, robust=robust))
    own = {n: p.detach().clone() for n, p in m.ctx.model.named_parameters()}
    received: list[Received] = []
    for i, peer in enumerate("bcd"):
        scale = 1e6 if peer == "d" else 1.0
        arrays = {n: (p.numpy() + 0.01 * (i + 1)) * scale for n, p in own.items()}
        received.append(_wire(peer, 1, 0, Model(arrays), m, 0))
    m.merge(0, received)
    for name, p in m.ctx.model.named_parameters():
        assert (p.detach() - own[name]).abs().max() < 1.0, name


def test_late_messages_pull_less_in_async_merges() -> None:
    """A payload from an older round is down-weighted by 1/(1 + s)^γ (weight goes to self)."""
    weights = {"a": 0.5, "b": 0.5}

    def pull(late_by: int) -> float:
        m = make_method("dense", _ctx("a", weights, staleness_gamma=1.0))
        own = {n: p.detach().clone() for n, p in m.ctx.model.named_parameters()}
        arrays = {n: p.numpy() + 1.0 for n, p in own.items()}
        m.merge(5, [_wire("b", 1, 5 - late_by, Model(arrays), m, 5)])
        name, p = next(iter(m.ctx.model.named_parameters()))
        return float((p.detach() - own[name]).mean())

    assert pull(0) == pytest.approx(0.5, abs=1e-5)
    assert pull(3) == pytest.approx(0.5 / 4, abs=1e-5)
