"""The simulator's view into each peer's exchange: outgoing-payload filters and a merge log.

Both attach through the node's own hooks (``Node(outgoing_filter=..., merge_observer=...)``),
so the method object is never altered: a fault may rewrite a peer's outgoing payloads per
target (an equivocating attacker), and every merge's input is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from spargo.node.methods.payloads import Payload, Received, is_control

#: ``filter(round_index, [(target, payload), ...]) -> [(target, payload), ...]``.
OutgoingFilter = Callable[[int, list[tuple[str, Payload]]], list[tuple[str, Payload]]]


@dataclass
class MergeLog:
    """Swarm-wide merge totals: merges that took in anything, and the staleness of what they
    took (per sender, the least staleness among its payloads; control payloads are not
    merges)."""

    merges: int = 0
    merged_messages: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0

    def observe(self, round_index: int, received: Sequence[Received]) -> None:
        """Account one ``method.merge(round_index, received)`` call."""
        least: dict[str, int] = {}
        for item in received:
            if not is_control(item.payload):
                least[item.sender] = min(least.get(item.sender, item.staleness), item.staleness)
        if not least:
            return
        late = list(least.values())
        self.merges += 1
        self.merged_messages += len(late)
        self.staleness_sum += sum(late)
        self.staleness_max = max(self.staleness_max, *late)

    def summary(self) -> dict[str, Any]:
        """``merges``, ``staleness_mean`` and ``staleness_max`` (None before any merge)."""
        mean = self.staleness_sum / self.merged_messages if self.merged_messages else None
        return {
            "merges": self.merges,
            "staleness_mean": None if mean is None else round(mean, 6),
            "staleness_max": self.staleness_max if self.merges else None,
        }


def chain(filters: Sequence[OutgoingFilter]) -> OutgoingFilter | None:
    """One filter applying ``filters`` in order (None when there are none)."""
    if not filters:
        return None
    steps = list(filters)

    def apply(round_index: int, payloads: list[tuple[str, Payload]]) -> list[tuple[str, Payload]]:
        for step in steps:
            payloads = step(round_index, list(payloads))
        return payloads

    return apply
