"""Peer samplers: which peers a peer sends to in round r.

Every sampler answers ``targets(peer, round, rng) -> list[int]``; randomness comes only from
the ``rng`` the caller passes, so a seeded run replays exactly. :class:`SampledRounds` is not a
sampler but a schedule: which peers take part in a round at all (MoDeST-style), computed from
a hash so every peer agrees without talking.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import networkx as nx
import numpy as np

from spargo.topology.errors import TopologyError
from spargo.topology.generators import exponential_hops

PeerKey = TypeVar("PeerKey", int, str)


@runtime_checkable
class PeerSampler(Protocol):
    """What a peer sends to in a round."""

    def targets(self, peer: int, round: int, rng: np.random.Generator) -> list[int]:
        """The peers ``peer`` sends to in round ``round`` (sorted, never ``peer`` itself)."""
        ...


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise TopologyError(f"k must be a positive integer, got {k!r}")
    return k


def _adjacency(g: nx.Graph) -> dict[int, tuple[int, ...]]:
    return {int(v): tuple(sorted(int(u) for u in g.neighbors(v))) for v in g.nodes}


class AllNeighbours:
    """Send to every graph neighbour, every round (static gossip, D-PSGD)."""

    def __init__(self, g: nx.Graph) -> None:
        self._adjacency = _adjacency(g)

    def targets(self, peer: int, round: int, rng: np.random.Generator) -> list[int]:
        """All neighbours of ``peer``."""
        if peer not in self._adjacency:
            raise TopologyError(f"peer {peer} is not a node of the graph")
        return list(self._adjacency[peer])


class RandomK:
    """Send to k neighbours drawn uniformly without replacement (all of them if fewer)."""

    def __init__(self, g: nx.Graph, k: int) -> None:
        self._adjacency = _adjacency(g)
        self.k = _check_k(k)

    def targets(self, peer: int, round: int, rng: np.random.Generator) -> list[int]:
        """Up to k random neighbours of ``peer``."""
        if peer not in self._adjacency:
            raise TopologyError(f"peer {peer} is not a node of the graph")
        options = self._adjacency[peer]
        if len(options) <= self.k:
            return list(options)
        picked = rng.choice(len(options), size=self.k, replace=False)
        return sorted(options[int(i)] for i in picked)


class OnePeerExponential:
    """One partner per round on the exponential graph: peer + 2^(r mod ⌈log2 n⌉) (mod n).

    Over ⌈log2 n⌉ consecutive rounds a peer visits every hop once; when n is a power of two
    this schedule averages exactly in log2 n rounds. Valid only on the exponential graph.
    """

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise TopologyError(f"one-peer exponential needs n >= 2 peers, got {n!r}")
        self.n = n
        self.hops = exponential_hops(n)

    def targets(self, peer: int, round: int, rng: np.random.Generator) -> list[int]:
        """The single partner of ``peer`` in round ``round``."""
        if not 0 <= peer < self.n:
            raise TopologyError(f"peer {peer} is outside 0..{self.n - 1}")
        if round < 0:
            raise TopologyError(f"round must be >= 0, got {round}")
        return [(peer + self.hops[round % len(self.hops)]) % self.n]


class MembershipSampler:
    """k peers drawn uniformly from a live membership view (dynamic, churning swarms)."""

    def __init__(self, k: int, members: Iterable[int] = ()) -> None:
        self.k = _check_k(k)
        self._view: tuple[int, ...] = ()
        self.update(members)

    @property
    def view(self) -> tuple[int, ...]:
        """The current membership view, sorted."""
        return self._view

    def update(self, members: Iterable[int]) -> None:
        """Replace the view with the peers currently believed alive."""
        self._view = tuple(sorted(set(members)))

    def targets(self, peer: int, round: int, rng: np.random.Generator) -> list[int]:
        """Up to k members other than ``peer``, uniformly at random."""
        options = [m for m in self._view if m != peer]
        if len(options) <= self.k:
            return options
        picked = rng.choice(len(options), size=self.k, replace=False)
        return sorted(options[int(i)] for i in picked)


def round_hash(seed: int, round: int, peer: int | str) -> float:
    """A uniform number in [0, 1) from SHA-256 of (seed, round, peer id): same on every peer."""
    kind = "i" if isinstance(peer, int) else "s"
    digest = hashlib.sha256(f"spargo-round|{seed}|{round}|{kind}:{peer}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class SampledRounds:
    """MoDeST-style sampled rounds: ⌈fraction · |members|⌉ peers take part in each round.

    The active set is the members with the smallest :func:`round_hash`, so every peer with the
    same membership view computes the same set, with no coordinator, and at least one peer is
    active in every round.
    """

    def __init__(self, fraction: float, seed: int) -> None:
        if not 0.0 < fraction <= 1.0:
            raise TopologyError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = float(fraction)
        self.seed = int(seed)

    def active_set(self, round: int, members: Sequence[PeerKey]) -> list[PeerKey]:
        """The peers active in ``round`` among ``members``, sorted."""
        unique = sorted(set(members))
        if not unique:
            return []
        count = max(1, math.ceil(self.fraction * len(unique) - 1e-9))
        ranked = sorted(unique, key=lambda p: (round_hash(self.seed, round, p), p))
        return sorted(ranked[:count])

    def active(self, peer: PeerKey, round: int, members: Sequence[PeerKey]) -> bool:
        """Whether ``peer`` takes part in ``round`` (False if it is not in ``members``)."""
        return peer in self.active_set(round, members)


def _spec_k(spec: str, arg: str | None, default: int) -> int:
    if arg is None:
        return default
    try:
        return _check_k(int(arg))
    except ValueError:
        raise TopologyError(f"sampler {spec!r}: K must be a positive integer") from None


def make_sampler(spec: str, g: nx.Graph | None, n: int) -> PeerSampler:
    """A sampler by name: "all", "random:K", "exponential" or "membership:K" (K defaults to 1)."""
    name, _, arg = spec.strip().partition(":")
    arg_or_none = arg or None
    if name in ("all", "random") and g is None:
        raise TopologyError(f"sampler {spec!r} needs a graph")
    if g is not None and g.number_of_nodes() != n:
        raise TopologyError(f"sampler {spec!r}: graph has {g.number_of_nodes()} nodes, not n={n}")
    if name == "all" and arg_or_none is None and g is not None:
        return AllNeighbours(g)
    if name == "random" and g is not None:
        return RandomK(g, _spec_k(spec, arg_or_none, 1))
    if name == "membership":
        return MembershipSampler(_spec_k(spec, arg_or_none, 1), range(n))
    if name == "exponential" and arg_or_none is None:
        sampler = OnePeerExponential(n)
        if g is not None:
            missing = [
                (i, (i + h) % n)
                for i in range(n)
                for h in sampler.hops
                if not g.has_edge(i, (i + h) % n)
            ]
            if missing:
                raise TopologyError(
                    f"sampler 'exponential' needs the exponential graph, but edge {missing[0]} "
                    "is missing; use topology 'exponential'"
                )
        return sampler
    raise TopologyError(
        f"unknown sampler {spec!r}; use one of: all, random:K, exponential, membership:K"
    )
