"""The node's inbox: checked payloads kept per round and sender until a merge takes them.

A payload arrives decoded and checked (``node.payload``) and is filed under the round and
gossip step its sender stamped on it (a round of ``gossip_steps`` Q has Q exchanges, steps 0
.. Q−1; docs/algorithms.md §4.10). A merge takes a round's arrivals (rounds mode) or
everything fresh enough (async mode) and turns them into ``Received`` values with their
staleness, computed here and only here: the merging round (async: the Lamport clock) minus
the sender's round, never below 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spargo.node.methods.payloads import Payload, Received


@dataclass(frozen=True, eq=False)
class Arrival:
    """One checked payload and the round (and gossip step) its sender stamped on it."""

    sender: str
    round: int
    payload: Payload
    step: int = 0


def staleness(merge_round: int, sent_round: int) -> int:
    """How many rounds late a payload stamped ``sent_round`` is at ``merge_round`` (>= 0; a
    payload from a peer ahead of us counts as fresh)."""
    return max(0, merge_round - sent_round)


def to_received(merge_round: int, arrivals: Mapping[str, Sequence[Arrival]]) -> list[Received]:
    """What ``method.merge`` gets: senders in sorted order, each one's arrivals in order."""
    return [
        Received(a.sender, a.payload, staleness(merge_round, a.round))
        for sender in sorted(arrivals)
        for a in arrivals[sender]
    ]


class Inbox:
    """Arrivals by stamped (round, step), then by sender."""

    def __init__(self) -> None:
        self._rounds: dict[tuple[int, int], dict[str, list[Arrival]]] = defaultdict(
            lambda: defaultdict(list)
        )

    def add(self, arrival: Arrival) -> None:
        """File ``arrival`` under its round, step and sender."""
        self._rounds[(arrival.round, arrival.step)][arrival.sender].append(arrival)

    def count(self, round_index: int, sender: str, step: int = 0) -> int:
        """How many payloads ``sender`` stamped (``round_index``, ``step``) are waiting."""
        bucket = self._rounds.get((round_index, step))
        return len(bucket.get(sender, ())) if bucket is not None else 0

    def take(self, round_index: int, step: int = 0) -> dict[str, list[Arrival]]:
        """Remove and return the arrivals of (``round_index``, ``step``) (by sender)."""
        return dict(self._rounds.pop((round_index, step), {}))

    def drop_before(self, round_index: int, step: int = 0) -> int:
        """Forget every arrival stamped before (``round_index``, ``step``); returns how many."""
        dropped = 0
        for stale in [key for key in self._rounds if key < (round_index, step)]:
            dropped += sum(len(items) for items in self._rounds.pop(stale).values())
        return dropped

    def take_fresh(self, clock: int, max_staleness: int) -> tuple[dict[str, list[Arrival]], int]:
        """Async mode: remove everything; return the arrivals at most ``max_staleness``
        behind ``clock`` (by sender, oldest round first) and how many were too old."""
        fresh: dict[str, list[Arrival]] = defaultdict(list)
        dropped = 0
        for key in sorted(self._rounds):
            for sender, items in self._rounds.pop(key).items():
                if clock - key[0] > max_staleness:
                    dropped += len(items)
                else:
                    fresh[sender].extend(items)
        return dict(fresh), dropped
