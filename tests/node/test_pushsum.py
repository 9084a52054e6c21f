"""Push-sum (method ``pushsum``): mass conservation, exact averaging over one-way schedules
where receiver-side averaging is biased, guards, checkpoints, learning; and ``pushsum_rs``
(running sums): mass conserved and the true average reached under message loss, duplicates
and reordering, where plain push-sum leaks mass. Payloads travel through the real seam
(payload → message → frame → message → checked payload)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spargo import topology
from spargo.node.checkpoint import load_checkpoint, save_checkpoint
from spargo.node.methods import Method, MethodContext, make_method
from spargo.node.methods.payloads import Model, Payload, PushShare, Received, RunningSums
from spargo.node.methods.pushsum import (
    PUSHSUM_MAX_SHARE,
    PUSHSUM_MIN_WEIGHT,
    LinkSums,
    PushSumMethod,
    RunningSumsMethod,
)
from spargo.node.params import exchangeable_parameters, to_arrays
from spargo.node.payload import PayloadMismatch, from_message, to_message
from spargo.node.view import SwarmLayout
from spargo.protocol import Decoder, Envelope, LocalProtocolError, encode
from spargo.sims import Scenario, run

SHAPE = (3, 4)
MIXES = {"mh": "dense", "pushsum": "pushsum", "pushsum_rs": "pushsum_rs"}


def _method(peer: str, weights: Mapping[str, float], value: np.ndarray, mix: str) -> Any:
    """The ``mix`` method (``mh`` is dense) over a tiny linear model set from ``value``."""
    model = nn.Linear(SHAPE[1], SHAPE[0])
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(value))
        model.bias.copy_(torch.as_tensor(value[:, 0]))
    ctx = MethodContext(model, peer, dict(weights), seed=0, rounds=10)
    return make_method(MIXES[mix], ctx)


def _wire(sender: str, seq: int, payload: Payload, receiver: Method, round_index: int) -> Received:
    """``payload`` as ``receiver``'s merge gets it after a trip over the wire."""
    frame = encode(Envelope("t", sender, seq, round_index, to_message(payload)))
    body = Decoder("t").decode(frame).body
    return Received(sender, from_message(body, receiver.signature()))


def _flat(method: Method) -> np.ndarray:
    return np.concatenate(
        [p.detach().numpy().astype(np.float64).reshape(-1) for p in method.ctx.model.parameters()]
    )


class Swarm:
    """Peers driven by hand: every message sent in a round is delivered before the merges."""

    def __init__(self, layout: SwarmLayout, mix: str, seed: int, loss: float = 0.0) -> None:
        rng = np.random.default_rng(seed)
        self.loss, self.loss_rng, self.dropped = loss, np.random.default_rng(seed + 1), 0
        self.layout = layout
        self.views = {p: layout.view(p) for p in layout.peers}
        self.methods = {
            p: _method(p, view.weights, rng.normal(size=SHAPE).astype(np.float32), mix=mix)
            for p, view in self.views.items()
        }
        self.seq = 0

    def round(self, r: int, targets: Mapping[str, Sequence[str]] | None = None) -> None:
        inbox: dict[str, list[Received]] = {p: [] for p in self.methods}
        for peer, method in self.methods.items():
            chosen = self.views[peer].targets(r) if targets is None else targets[peer]
            for target, payload in method.outgoing(r, chosen):
                self.seq += 1
                if self.loss and self.loss_rng.random() < self.loss:
                    self.dropped += 1
                    continue
                receiver = self.methods[target]
                inbox[target].append(_wire(peer, self.seq, payload, receiver, r))
        for peer, method in self.methods.items():
            received = sorted(inbox[peer], key=lambda item: item.sender)
            stats = method.merge(r, received).stats
            if isinstance(method, PushSumMethod):
                assert stats.pushsum_mass == method.weight

    def models(self) -> np.ndarray:
        return np.stack([_flat(m) for m in self.methods.values()])

    def masses(self) -> np.ndarray:
        return np.array([getattr(m, "weight", 1.0) for m in self.methods.values()])


def _layout(spec: str, n: int, sampler: str, seed: int = 0) -> SwarmLayout:
    graph = topology.make_graph(spec, n, seed=seed)
    return SwarmLayout(graph, [f"p{i}" for i in range(n)], sampler=sampler, seed=seed)


# --- mathematics -------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 7), rounds=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_any_one_way_schedule_conserves_mass_and_sum(n: int, rounds: int, seed: int) -> None:
    """Whatever each peer pushes to (any subset, one-way), Σw = n and Σ z·w is unchanged."""
    swarm = Swarm(_layout("complete", n, "all"), "pushsum", seed)
    rng = np.random.default_rng(seed)
    peers = list(swarm.methods)
    total = (swarm.models() * swarm.masses()[:, None]).sum(axis=0)
    for r in range(rounds):
        targets = {p: [q for q in peers if q != p and rng.random() < 0.4] for p in peers}
        swarm.round(r, targets)
        assert swarm.masses().sum() == pytest.approx(n, rel=1e-12)
        assert (swarm.masses() > 0).all()
        moved = (swarm.models() * swarm.masses()[:, None]).sum(axis=0)
        np.testing.assert_allclose(moved, total, rtol=1e-5, atol=1e-5)


def test_one_peer_exponential_averages_exactly_in_log2_n_rounds() -> None:
    """n = 8, one push per round: push-sum is the exact average after 3 rounds; MH is not."""
    layout = _layout("exponential", 8, "exponential")
    pushsum, mh = Swarm(layout, "pushsum", 1), Swarm(layout, "mh", 1)
    truth = pushsum.models().mean(axis=0)
    np.testing.assert_allclose(mh.models().mean(axis=0), truth)
    for r in range(3):
        pushsum.round(r)
        mh.round(r)
    np.testing.assert_allclose(pushsum.models(), np.broadcast_to(truth, (8, truth.size)), atol=1e-6)
    np.testing.assert_array_equal(pushsum.masses(), np.ones(8))
    assert np.abs(mh.models() - truth).max() > 0.1  # MH (weights 1/6 here) still far apart


def test_one_way_random_pushes_reach_the_true_average_where_mh_drifts() -> None:
    """One random neighbour per round on an irregular graph: in-degrees differ round to round.

    Receiver-side MH rows are stochastic but not column-stochastic, so the swarm's average
    drifts away from the average of where the peers started; push-sum's shares are
    column-stochastic, so every z → the true average.
    """
    layout = _layout("ba:2", 8, "random:1", seed=3)
    pushsum, mh = Swarm(layout, "pushsum", 3), Swarm(layout, "mh", 3)
    truth = pushsum.models().mean(axis=0)
    for r in range(120):
        pushsum.round(r)
        mh.round(r)
    assert pushsum.masses().sum() == pytest.approx(8.0)
    assert not np.allclose(pushsum.masses(), 1.0)  # the masses really moved
    np.testing.assert_allclose(pushsum.models(), np.broadcast_to(truth, (8, truth.size)), atol=1e-5)
    assert np.abs(mh.models().mean(axis=0) - truth).max() > 0.1  # MH's average moved
    assert np.abs(mh.models() - truth).max() > 0.1


# --- merging rules -----------------------------------------------------------------------
def _share(method: Method, offset: float, mass: float) -> PushShare:
    arrays = {n: p.detach().numpy() + offset for n, p in method.ctx.model.named_parameters()}
    return PushShare(arrays, mass)


def test_pushes_from_any_sender_merge_and_each_share_counts() -> None:
    """A non-neighbour's push is merged (one-way link); two rounds' shares both add mass.
    (The same frame twice never reaches merge: the decoder's replay window drops it.)"""
    a = _method("a", {"a": 1.0}, np.zeros(SHAPE, np.float32), "pushsum")
    first = _wire("stranger", 1, _share(a, 3.0, 0.5), a, 0)
    later = _wire("stranger", 2, _share(a, 3.0, 0.5), a, 1)
    stats = a.merge(1, [first, later]).stats
    assert stats.pushsum_shares == 2
    assert stats.merged_peers == 1
    assert a.weight == pytest.approx(2.0)
    np.testing.assert_allclose(_flat(a), 1.5)  # (0·1 + 3·0.5 + 3·0.5) / 2


def test_a_share_with_an_impossible_mass_is_refused() -> None:
    """Mass <= 0 cannot even be put on the wire; a finite but absurd one is rejected."""
    a = _method("a", {"a": 0.5, "b": 0.5}, np.ones(SHAPE, np.float32), "pushsum")
    for mass in (0.0, -1.0):
        with pytest.raises(LocalProtocolError, match="mass"):
            to_message(_share(a, 5.0, mass))
    before = _flat(a)
    stats = a.merge(0, [_wire("b", 1, _share(a, 5.0, 1e300), a, 0)]).stats
    assert stats.rejected == 1
    assert stats.pushsum_mass == 1.0
    np.testing.assert_array_equal(_flat(a), before)


def test_a_peer_that_only_sends_keeps_a_positive_weight() -> None:
    a = _method("a", {"a": 0.5, "b": 0.5}, np.ones(SHAPE, np.float32), "pushsum")
    a.weight = 3 * PUSHSUM_MIN_WEIGHT
    for r in range(3):
        ((_, payload),) = a.outgoing(r, ["b"])
        assert isinstance(payload, PushShare)
        assert payload.mass > 0
    stats = a.merge(3, []).stats
    assert a.weight == PUSHSUM_MIN_WEIGHT
    assert stats.pushsum_guard == 2
    np.testing.assert_array_equal(_flat(a), 1.0)  # z itself is untouched by the split


def test_mh_mix_is_unchanged_and_sends_no_mass() -> None:
    a = _method("a", {"a": 0.5, "b": 0.5}, np.zeros(SHAPE, np.float32), "mh")
    ((_, payload),) = a.outgoing(0, ["b"])
    assert isinstance(payload, Model)
    other = Model({n: np.full(a.signature().shapes[n], 2.0, np.float32) for n in payload.arrays})
    stats = a.merge(0, [_wire("b", 1, other, a, 0)]).stats
    assert stats.pushsum_mass is None
    assert "pushsum_mass" not in stats.as_dict()
    np.testing.assert_allclose(_flat(a), 1.0)
    assert a.state_dict() == {}


# --- options, checkpoints, learning ---------------------------------------------------------
def test_mix_pushsum_is_a_clear_error_naming_the_method() -> None:
    """``dense --option mix=pushsum`` was how push-sum was spelled; now it says what to use."""
    for name, mix in (("dense", "pushsum"), ("dense", "pushsum_rs"), ("vc", "pushsum")):
        ctx = MethodContext(nn.Linear(2, 2), "a", {"a": 1.0}, options={"mix": mix})
        with pytest.raises(ValueError, match=f"use method {mix}"):
            make_method(name, ctx)
    ctx = MethodContext(nn.Linear(2, 2), "a", {"a": 1.0}, options={"mix": "pushpull"})
    with pytest.raises(ValueError, match="mh, beta"):
        make_method("vc", ctx)
    ctx = MethodContext(nn.Linear(2, 2), "a", {"a": 1.0}, options={"robust": "median"})
    with pytest.raises(ValueError, match="no option 'robust'"):
        make_method("pushsum", ctx)


def test_weight_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    layout = _layout("ba:1", 6, "random:1", seed=3)
    swarm = Swarm(layout, "pushsum", 4)
    for r in range(5):
        swarm.round(r)
    peer, method = max(swarm.methods.items(), key=lambda item: abs(item[1].weight - 1.0))
    assert method.weight != 1.0
    path = tmp_path / "p.ckpt"
    save_checkpoint(path, {"model": method.ctx.model.state_dict(), "method": method.state_dict()})
    state = load_checkpoint(path)  # torch.load(weights_only=True) inside
    fresh = _method(peer, layout.view(peer).weights, np.zeros(SHAPE, np.float32), "pushsum")
    fresh.ctx.model.load_state_dict(state["model"])
    fresh.load_state_dict(state["method"])
    assert fresh.weight == method.weight
    np.testing.assert_array_equal(_flat(fresh), _flat(method))
    old = _method(peer, {}, np.zeros(SHAPE, np.float32), "pushsum")
    old.load_state_dict({})  # a checkpoint without a mass (dense's): the mass starts at 1
    assert old.weight == 1.0
    with pytest.raises(ValueError, match="finite and > 0"):
        old.load_state_dict({"pushsum_weight": 0.0})


def _sim(**kw: Any) -> Any:
    torch.set_num_threads(1)
    base: dict[str, Any] = {
        "nodes": 8,
        "rounds": 20,
        "seed": 0,
        "method": "pushsum",
        "partition": "iid",
        "eval_every": 1000,
    }
    return run(Scenario(**{**base, **kw}))


def test_the_runner_conserves_mass_on_an_irregular_graph() -> None:
    # Every peer hears from all its neighbours each round (so the rounds stay in step), but
    # degrees differ: each peer's mass goes out in unequal 1/(d + 1) shares.
    result = _sim(topology="ba:1", rounds=6)
    last = [m.merge["pushsum_mass"] for m in result.rounds if m.round == 5]
    assert len(last) == 8
    assert sum(last) == pytest.approx(8.0, rel=1e-9)
    assert not np.allclose(last, 1.0)


def test_pushsum_learns_digits_on_the_one_peer_exponential_schedule() -> None:
    result = _sim(topology="exponential", sampler="exponential")
    assert result.summary["accuracy_mean"] >= 0.85, result.summary
    assert result.summary["drops"] == {}


# --- running sums (pushsum_rs) ---------------------------------------------------------------
def _arrays(method: Method) -> dict[str, np.ndarray]:
    return {
        n: a.astype(np.float64)
        for n, a in to_arrays(exchangeable_parameters(method.ctx.model)).items()
    }


def _totals(swarm: Swarm) -> tuple[float, dict[str, np.ndarray]]:
    """Σw and Σx = Σ z·w over the peers plus what is in flight on every link (σ − ρ)."""
    methods = swarm.methods
    weight = float(swarm.masses().sum())
    x: dict[str, np.ndarray] = {
        n: np.sum([_arrays(m)[n] * m.weight for m in methods.values()], axis=0)
        for n in _arrays(methods["p0"])
    }
    for sender, method in methods.items():
        for target, sums in method.sent.items():
            heard = methods[target].heard.get(sender)
            weight += sums.w - (heard.w if heard else 0.0)
            for n in x:
                x[n] = x[n] + sums.x[n] - (heard.x[n] if heard else 0.0)
    return weight, x


def test_running_sums_conserve_mass_under_loss_where_plain_pushsum_leaks() -> None:
    """30 % loss, one random one-way push per round: Σw + in flight stays n and every z reaches
    the true average; plain push-sum's Σw decays and its consensus misses the average."""
    layout = _layout("ba:2", 8, "random:1", seed=3)
    rs, plain = Swarm(layout, "pushsum_rs", 5, loss=0.3), Swarm(layout, "pushsum", 5, loss=0.3)
    truth = rs.models().mean(axis=0)
    _, x0 = _totals(rs)
    for r in range(200):
        rs.round(r)
        plain.round(r)
        weight, x = _totals(rs)
        assert weight == pytest.approx(8.0, rel=1e-12)
        for n in x0:
            np.testing.assert_allclose(x[n], x0[n], rtol=1e-5, atol=1e-5)  # z is float32
    assert rs.dropped > 0.2 * 8 * 200
    assert rs.masses().sum() < 8.0  # some mass is always in flight ...
    assert rs.masses().sum() > 4.0  # ... but not lost
    np.testing.assert_allclose(rs.models(), np.broadcast_to(truth, (8, truth.size)), atol=1e-5)
    assert plain.masses().sum() < 1e-6
    assert np.abs(plain.models() - truth).max() > 1e-3


def _pair() -> tuple[RunningSumsMethod, RunningSumsMethod]:
    a = _method("a", {"a": 0.5, "b": 0.5}, np.zeros(SHAPE, np.float32), "pushsum_rs")
    b = _method("b", {"a": 0.5, "b": 0.5}, np.full(SHAPE, 4.0, np.float32), "pushsum_rs")
    return a, b


def _push(sender: RunningSumsMethod, receiver: Method, seq: int) -> Received:
    ((_, payload),) = sender.outgoing(seq, [receiver.ctx.peer_id])
    return _wire(sender.ctx.peer_id, seq, payload, receiver, seq)


def test_a_lost_message_arrives_with_the_next_and_stale_copies_are_ignored() -> None:
    """b pushes three times to a; the first is lost, the third overtakes the second, then the
    second and a duplicate of the third arrive: a ends with exactly all three shares."""
    a, b = _pair()
    first, second, third = (_push(b, a, s) for s in (1, 2, 3))
    stats = a.merge(3, [third]).stats
    assert stats.pushsum_shares == 1
    assert stats.stale == 0
    assert a.weight == pytest.approx(1.0 + 0.5 + 0.25 + 0.125)  # b kept 1/8 of its mass
    assert b.weight == pytest.approx(0.125)
    np.testing.assert_allclose(_flat(a), 4.0 * 0.875 / 1.875, rtol=1e-6)
    stats = a.merge(4, [second, third, first]).stats
    assert stats.stale == 3
    assert stats.pushsum_shares == 0
    assert a.weight == pytest.approx(1.875)
    masses = [item.payload.mass for item in (first, second, third)]  # type: ignore[union-attr]
    assert masses == sorted(masses)


def test_running_sums_stay_exact_when_they_outgrow_float32() -> None:
    """After 10⁶ units have passed on a link, a share of 1/3 still arrives as 1/3: float32
    would deliver fl32(10⁶ + 1/3) − 10⁶ = 0.3125; the float64 sums on the wire keep it."""
    a, _ = _pair()
    shapes = a.signature().shapes
    a.heard["b"] = LinkSums({n: np.full(shape, 1e6) for n, shape in shapes.items()}, 1e6)
    sums = {n: np.full(shape, 1e6 + 1 / 3) for n, shape in shapes.items()}
    a.merge(0, [_wire("b", 1, RunningSums(sums, 1e6 + 1.0), a, 0)])
    assert a.weight == pytest.approx(2.0, rel=1e-12)
    np.testing.assert_allclose(_flat(a), 1 / 6, rtol=1e-7)  # (0·1 + 1/3) / 2


def test_a_malformed_running_sum_is_refused_and_does_not_advance_the_link() -> None:
    """Sums of other tensors never reach merge (the seam refuses them); an absurd mass gain
    is rejected by the method; neither moves the link."""
    a, b = _pair()
    good = _push(b, a, 1)
    assert isinstance(good.payload, RunningSums)
    other = RunningSums({"other": np.zeros(3)}, good.payload.mass)
    with pytest.raises(PayloadMismatch):
        _wire("b", 7, other, a, 0)
    heavy = RunningSums(good.payload.sums, 2 * PUSHSUM_MAX_SHARE)
    stats = a.merge(0, [_wire("b", 8, heavy, a, 0)]).stats
    assert stats.rejected == 1
    assert a.weight == 1.0
    assert not a.heard
    a.merge(1, [good])
    assert a.weight == pytest.approx(1.5)
    np.testing.assert_allclose(_flat(a), 4.0 * 0.5 / 1.5, rtol=1e-6)


def test_running_sums_survive_a_checkpoint_round_trip(tmp_path: Path) -> None:
    """Weight and both tables come back (weights_only load); the restored peer then sends
    exactly what the original sends."""
    swarm = Swarm(_layout("ba:2", 6, "random:1", seed=3), "pushsum_rs", 4, loss=0.3)
    for r in range(6):
        swarm.round(r)
    peer, method = max(swarm.methods.items(), key=lambda item: len(item[1].heard))
    assert method.sent
    assert method.heard
    path = tmp_path / "p.ckpt"
    save_checkpoint(path, {"model": method.ctx.model.state_dict(), "method": method.state_dict()})
    state = load_checkpoint(path)  # torch.load(weights_only=True) inside
    fresh = _method(peer, {}, np.zeros(SHAPE, np.float32), "pushsum_rs")
    fresh.ctx.model.load_state_dict(state["model"])
    fresh.load_state_dict(state["method"])
    assert fresh.weight == method.weight
    for mine, theirs in ((fresh.sent, method.sent), (fresh.heard, method.heard)):
        assert set(mine) == set(theirs)
        for p in mine:
            assert mine[p].w == theirs[p].w
            for n in mine[p].x:
                np.testing.assert_array_equal(mine[p].x[n], theirs[p].x[n])
    target = next(iter(method.sent))
    ((_, sent),) = method.outgoing(9, [target])
    ((_, again),) = fresh.outgoing(9, [target])
    assert isinstance(sent, RunningSums)
    assert isinstance(again, RunningSums)
    assert sent.mass == again.mass
    for name in sent.sums:
        np.testing.assert_array_equal(sent.sums[name], again.sums[name])
    wrong = {**state["method"], "pushsum_sent": {"x": {"w": 1.0, "x": {"weight": torch.zeros(2)}}}}
    with pytest.raises(ValueError, match="running sums must match"):
        fresh.load_state_dict(wrong)


def test_running_sums_keep_the_mass_in_a_lossy_simulation() -> None:
    """30 % loss on a ring: plain push-sum leaks Σw, running sums keep it and learn. With
    SGP's step on x (z moves by η∇F/w) a leaking swarm's steps grow as Σw shrinks: plain
    push-sum does not learn over lossy links (docs/algorithms.md §4.6); use pushsum_rs."""
    sums: dict[str, float] = {}
    accuracy: dict[str, float] = {}
    for mix in ("pushsum", "pushsum_rs"):
        result = _sim(topology="ring", loss=0.3, method=mix, eval_every=20)
        last = max(m.round for m in result.rounds)
        sums[mix] = sum(m.merge["pushsum_mass"] for m in result.rounds if m.round == last)
        accuracy[mix] = result.summary["accuracy_mean"]
    assert sums["pushsum"] < 0.05 * 8
    assert sums["pushsum_rs"] > 0.5 * 8
    assert accuracy["pushsum_rs"] >= 0.8, accuracy
