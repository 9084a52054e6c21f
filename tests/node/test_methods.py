"""Gossip methods end to end (8 peers in memory through the real runner) and piece by piece."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spargo.node.checkpoint import load_checkpoint, save_checkpoint
from spargo.node.methods import MethodContext, make_method, method_names
from spargo.node.methods.choco import ChocoMethod
from spargo.node.tasks import load_task
from spargo.protocol import Delta, Envelope, FullModel, MaskedUpdate, NamedTensor, ResyncRequest
from spargo.sims.runner import SimResult, run
from spargo.sims.scenario import Scenario

ROUNDS = 10
FLOORS = {"dense": 0.85, "vc": 0.85, "fedsparsify": 0.8, "choco": 0.8, "spafl": 0.75}
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
    assert result.summary["accuracy_on"] == "local"  # SpaFL models are personalised
    assert result.summary["global_accuracy_mean"] >= 0.6
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


def _envelope(sender: str, seq: int, round_index: int, body: Any) -> Envelope:
    return Envelope(swarm="t", sender=sender, seq=seq, round=round_index, body=body)


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

    def deliver(round_index: int, drop: bool = False) -> dict[str, float]:
        nonlocal seq
        _nudge(a.ctx.model, round_index)
        b.outgoing(round_index, [])  # b's own stream: its public copy x̂_b
        sent = a.outgoing(round_index, ["b"])
        seq += 1
        received = {} if drop else {"a": [_envelope("a", seq, round_index, sent[0][1])]}
        return b.merge(round_index, received)

    deliver(0)
    deliver(1)
    _assert_copy_matches(b, a)
    deliver(2, drop=True)
    stats = deliver(3)
    assert stats["gaps"] == 1.0
    assert "a" not in b.copies
    (peer, request), *_ = b.outbox
    assert peer == "a"
    assert isinstance(request, ResyncRequest)
    a.on_control(_envelope("b", 1, 3, request))
    _nudge(a.ctx.model, 4)
    sent = a.outgoing(4, ["b"])
    assert isinstance(sent[0][1], FullModel)
    stats = b.merge(4, {"a": [_envelope("a", 9, 4, sent[0][1])]})
    assert stats["resyncs"] == 1.0
    _assert_copy_matches(b, a)
    stats = deliver(5)
    assert stats["gaps"] == 0.0
    assert stats["merged_peers"] == 1.0
    _assert_copy_matches(b, a)


def _assert_copy_matches(receiver: ChocoMethod, sender: ChocoMethod) -> None:
    assert sender.public is not None
    copy = receiver.copies[sender.ctx.peer_id]
    for name, value in sender.public.items():
        np.testing.assert_array_equal(copy[name], value)


def test_choco_randk_int8_streams_agree() -> None:
    weights = {"a": 0.5, "b": 0.5}
    options = {"compressor": "randk", "value_dtype": "int8", "ratio": 0.2}
    a = ChocoMethod(_ctx("a", weights, **options))
    b = ChocoMethod(_ctx("b", weights, **options))
    for r in range(4):
        _nudge(a.ctx.model, r)
        body = a.outgoing(r, ["b"])[0][1]
        assert r == 0 or isinstance(body, Delta)
        b.merge(r, {"a": [_envelope("a", r + 1, r, body)]})
    _assert_copy_matches(b, a)


@pytest.mark.parametrize("method", ["spafl", "fedsparsify", "choco", "vc"])
def test_method_state_round_trips_through_a_checkpoint(method: str, tmp_path: Path) -> None:
    weights = {"a": 0.5, "b": 0.5}
    a = make_method(method, _ctx("a", weights))
    b = make_method(method, _ctx("b", weights))
    for r in range(3):
        a.begin_round(r)
        b.begin_round(r)
        _nudge(a.ctx.model, r)
        _nudge(b.ctx.model, 100 + r)
        to_a = [_envelope("b", r + 1, r, body) for _, body in b.outgoing(r, ["a"])]
        a.merge(r, {"b": to_a})
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


@pytest.mark.parametrize("method", ["dense", "vc", "spafl", "fedsparsify", "choco"])
def test_bad_peer_data_is_rejected_and_counted(method: str) -> None:
    weights = {"a": 0.4, "b": 0.3, "c": 0.3}
    m = make_method(
        method, _ctx("a", weights, **({"weights_every": 1} if method == "spafl" else {}))
    )
    before = {k: v.clone() for k, v in m.ctx.model.state_dict().items()}
    wrong = (NamedTensor("nope", np.zeros(3, np.float32)),)
    bodies = [FullModel(tensors=wrong), MaskedUpdate(tensors=wrong), Delta(1, wrong)]
    nan = {n: np.full(p.shape, np.nan, np.float32) for n, p in m.ctx.model.named_parameters()}
    bodies.append(FullModel(tensors=tuple(NamedTensor(n, a) for n, a in nan.items())))
    received = {"b": [_envelope("b", i + 1, 0, body) for i, body in enumerate(bodies)]}
    m.begin_round(0)
    stats = m.merge(0, received)
    assert stats["rejected"] >= 1.0
    for name, value in m.ctx.model.state_dict().items():
        assert torch.isfinite(value).all(), name
    if method in ("dense", "vc", "fedsparsify"):
        for name, value in m.ctx.model.state_dict().items():
            assert torch.equal(value, before[name]), name


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid: .*robust"):
        make_method("dense", _ctx("a", {"a": 1.0}, weights_every=3))
    with pytest.raises(ValueError, match="must be a int"):
        make_method("spafl", _ctx("a", {"a": 1.0}, weights_every="often"))
    with pytest.raises(ValueError, match="trimmed:B"):
        make_method("vc", _ctx("a", {"a": 1.0}, robust="mean"))
    assert method_names() == ["choco", "dense", "fedsparsify", "spafl", "vc"]


@pytest.mark.parametrize("robust", ["clip", "median", "trimmed:1", "trimmed:5"])
def test_robust_dense_ignores_a_wild_neighbour(robust: str) -> None:
    weights = {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
    m = make_method("dense", _ctx("a", weights, robust=robust))
    own = {n: p.detach().clone() for n, p in m.ctx.model.named_parameters()}
    received: dict[str, list[Envelope]] = {}
    for i, peer in enumerate("bcd"):
        scale = 1e6 if peer == "d" else 1.0
        tensors = tuple(
            NamedTensor(n, (p.numpy() + 0.01 * (i + 1)) * scale) for n, p in own.items()
        )
        received[peer] = [_envelope(peer, 1, 0, FullModel(tensors=tensors))]
    m.merge(0, received)
    for name, p in m.ctx.model.named_parameters():
        assert (p.detach() - own[name]).abs().max() < 1.0, name


def test_late_messages_pull_less_in_async_merges() -> None:
    """An envelope from an older round is down-weighted by 1/(1 + s)^γ (weight goes to self)."""
    weights = {"a": 0.5, "b": 0.5}

    def pull(late_by: int) -> float:
        m = make_method("dense", _ctx("a", weights, staleness_gamma=1.0))
        own = {n: p.detach().clone() for n, p in m.ctx.model.named_parameters()}
        tensors = tuple(NamedTensor(n, p.numpy() + 1.0) for n, p in own.items())
        m.merge(5, {"b": [_envelope("b", 1, 5 - late_by, FullModel(tensors=tensors))]})
        name, p = next(iter(m.ctx.model.named_parameters()))
        return float((p.detach() - own[name]).mean())

    assert pull(0) == pytest.approx(0.5, abs=1e-5)
    assert pull(3) == pytest.approx(0.5 / 4, abs=1e-5)
