"""The node's inbox: checked payloads kept per round and sender until a merge takes them.

A payload arrives decoded and checked (``node.payload``) and is filed under the round its
sender stamped on it. A merge takes a round's arrivals (rounds mode) or everything fresh
enough (async mode) and turns them into ``Received`` values with their staleness, computed
here and only here: the merging round (async: the Lamport clock) minus the sender's round,
never below 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spargo.node.methods.payloads import Payload, Received


@dataclass(frozen=True, eq=False)
class Arrival:
    """One checked payload and the round its sender stamped on it."""

    sender: str
    round: int
    payload: Payload


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
    """Arrivals by stamped round, then by sender."""

    def __init__(self) -> None:
        self._rounds: dict[int, dict[str, list[Arrival]]] = defaultdict(lambda: defaultdict(list))

    def add(self, arrival: Arrival) -> None:
        """File ``arrival`` under its round and sender."""
        self._rounds[arrival.round][arrival.sender].append(arrival)

    def count(self, round_index: int, sender: str) -> int:
        """How many payloads ``sender`` stamped ``round_index`` are waiting."""
        bucket = self._rounds.get(round_index)
        return len(bucket.get(sender, ())) if bucket is not None else 0

    def take(self, round_index: int) -> dict[str, list[Arrival]]:
        """Remove and return the arrivals of ``round_index`` (by sender)."""
        return dict(self._rounds.pop(round_index, {}))

    def drop_before(self, round_index: int) -> int:
        """Forget every arrival stamped before ``round_index``; returns how many."""
        dropped = 0
        for stale in [r for r in self._rounds if r < round_index]:
            dropped += sum(len(items) for items in self._rounds.pop(stale).values())
        return dropped

    def take_fresh(self, clock: int, max_staleness: int) -> tuple[dict[str, list[Arrival]], int]:
        """Async mode: remove everything; return the arrivals at most ``max_staleness``
        behind ``clock`` (by sender, oldest round first) and how many were too old."""
        fresh: dict[str, list[Arrival]] = defaultdict(list)
        dropped = 0
        for stamp in sorted(self._rounds):
            for sender, items in self._rounds.pop(stamp).items():
                if clock - stamp > max_staleness:
                    dropped += len(items)
                else:
                    fresh[sender].extend(items)
        return dict(fresh), dropped
