"""Peer samplers and sampled rounds: who is targeted, and that every peer agrees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spargo import topology as t


def test_all_neighbours() -> None:
    g = t.small_world(20, 4, 0.3, seed=1)
    sampler = t.AllNeighbours(g)
    rng = np.random.default_rng(0)
    assert isinstance(sampler, t.PeerSampler)
    for peer in g.nodes:
        assert sampler.targets(peer, 0, rng) == t.neighbours(g, peer)


def test_random_k_targets_are_neighbours_and_seeded() -> None:
    g = t.random_regular(30, 6, seed=2)
    sampler = t.RandomK(g, 2)
    rng = np.random.default_rng(7)
    seen: set[int] = set()
    for r in range(50):
        targets = sampler.targets(3, r, rng)
        assert len(targets) == 2 == len(set(targets))
        assert set(targets) <= set(g.neighbors(3))
        seen |= set(targets)
    assert seen == set(g.neighbors(3))  # over many rounds every neighbour comes up
    a = [sampler.targets(0, r, np.random.default_rng(1)) for r in range(5)]
    b = [sampler.targets(0, r, np.random.default_rng(1)) for r in range(5)]
    assert a == b
    assert t.RandomK(t.line(3), 5).targets(1, 0, rng) == [0, 2]  # fewer neighbours than k


@pytest.mark.parametrize("n", [2, 5, 8, 12, 16])
def test_one_peer_exponential_visits_every_hop(n: int) -> None:
    g = t.exponential(n)
    sampler = t.OnePeerExponential(n)
    rng = np.random.default_rng(0)
    hops = t.exponential_hops(n)
    for peer in range(n):
        partners = [sampler.targets(peer, r, rng) for r in range(len(hops))]
        assert all(len(p) == 1 for p in partners)
        assert all(g.has_edge(peer, p[0]) for p in partners)
        assert sorted((p[0] - peer) % n for p in partners) == hops
        # The schedule repeats with period ⌈log2 n⌉.
        assert sampler.targets(peer, len(hops) + 1, rng) == partners[1 % len(hops)]


def test_one_peer_exponential_averages_exactly_for_powers_of_two() -> None:
    n = 16
    sampler = t.OnePeerExponential(n)
    rng = np.random.default_rng(0)
    x = np.random.default_rng(1).normal(size=n)
    mean = x.mean()
    for r in range(4):  # log2 16 rounds of pairwise-averaging with peer ± 2^r
        w = np.zeros((n, n))
        for peer in range(n):
            (partner,) = sampler.targets(peer, r, rng)
            w[peer, peer] += 0.5
            w[peer, partner] += 0.5
        x = w @ x
    assert np.allclose(x, mean)


def test_membership_sampler() -> None:
    sampler = t.MembershipSampler(3)
    rng = np.random.default_rng(0)
    assert sampler.targets(0, 0, rng) == []
    sampler.update([5, 1, 9, 1, 4, 7])
    assert sampler.view == (1, 4, 5, 7, 9)
    for r in range(30):
        targets = sampler.targets(4, r, rng)
        assert len(targets) == 3 == len(set(targets))
        assert 4 not in targets
        assert set(targets) <= {1, 5, 7, 9}
    sampler.update([1, 2])
    assert sampler.targets(1, 0, rng) == [2]


@settings(max_examples=60, deadline=None)
@given(
    fraction=st.floats(min_value=0.01, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**31),
    members=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=60),
    round_=st.integers(min_value=0, max_value=10**6),
)
def test_sampled_rounds_agree_and_never_empty(
    fraction: float, seed: int, members: list[int], round_: int
) -> None:
    schedule = t.SampledRounds(fraction, seed)
    active = schedule.active_set(round_, members)
    assert 1 <= len(active) <= len(set(members))
    assert active == sorted(active)
    assert set(active) <= set(members)
    # Every peer, with its own copy of the schedule and the view in any order, agrees.
    other = t.SampledRounds(fraction, seed)
    shuffled = list(reversed(members))
    assert other.active_set(round_, shuffled) == active
    assert sorted(p for p in set(members) if other.active(p, round_, shuffled)) == active


def test_sampled_rounds_size_and_variety() -> None:
    schedule = t.SampledRounds(0.25, seed=3)
    members = list(range(40))
    sets = [tuple(schedule.active_set(r, members)) for r in range(50)]
    assert all(len(s) == 10 for s in sets)
    assert len(set(sets)) > 40  # different rounds pick different peers
    counts = np.bincount([p for s in sets for p in s], minlength=40)
    assert counts.min() > 0  # nobody is left out for 50 rounds
    assert schedule.active_set(0, members) != t.SampledRounds(0.25, seed=4).active_set(0, members)
    assert not schedule.active(99, 0, members)
    assert t.SampledRounds(0.5, 1).active_set(0, ["b", "a", "c", "d"]) == sorted(
        t.SampledRounds(0.5, 1).active_set(0, ["d", "c", "b", "a"])
    )


def test_round_hash_is_stable() -> None:
    # Pinned: the hash must not change between versions or processes (peers must agree).
    assert 0.0 <= t.round_hash(1, 2, 3) < 1.0
    assert t.round_hash(1, 2, 3) != t.round_hash(1, 2, "3")
    assert f"{t.round_hash(7, 11, 13):.12f}" == PINNED_HASH


PINNED_HASH = "0.008757272571"


def test_make_sampler() -> None:
    g = t.exponential(8)
    assert isinstance(t.make_sampler("all", g, 8), t.AllNeighbours)
    random_k = t.make_sampler("random:2", g, 8)
    assert isinstance(random_k, t.RandomK)
    assert random_k.k == 2
    assert isinstance(t.make_sampler("exponential", g, 8), t.OnePeerExponential)
    assert isinstance(t.make_sampler("exponential", None, 8), t.OnePeerExponential)
    member = t.make_sampler("membership:3", None, 8)
    assert isinstance(member, t.MembershipSampler)
    assert member.view == tuple(range(8))


@pytest.mark.parametrize(
    ("spec", "graph", "n", "message"),
    [
        ("gossip", t.ring(8), 8, "unknown sampler 'gossip'.*random:K"),
        ("random:x", t.ring(8), 8, "positive integer"),
        ("random:0", t.ring(8), 8, "positive integer"),
        ("exponential", t.ring(8), 8, "needs the exponential graph"),
        ("all", None, 8, "needs a graph"),
        ("all", t.ring(8), 9, "not n=9"),
    ],
)
def test_make_sampler_errors(spec: str, graph: object, n: int, message: str) -> None:
    with pytest.raises(t.TopologyError, match=message):
        t.make_sampler(spec, graph, n)


def test_sampler_argument_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(t.TopologyError, match="not a node"):
        t.AllNeighbours(t.ring(3)).targets(5, 0, rng)
    with pytest.raises(t.TopologyError, match="n >= 2"):
        t.OnePeerExponential(1)
    with pytest.raises(t.TopologyError, match="outside"):
        t.OnePeerExponential(4).targets(4, 0, rng)
    with pytest.raises(t.TopologyError, match="fraction"):
        t.SampledRounds(0.0, 1)
