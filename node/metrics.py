"""Per-peer counters and per-round records (what sims, lab and monitor report)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Counters:
    """Running totals of one peer's traffic; drops are counted by reason."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    send_failures: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` messages dropped for ``reason`` (0 records nothing)."""
        if count > 0:
            self.drops[reason] += count

    @property
    def messages_dropped(self) -> int:
        return sum(self.drops.values())


@dataclass(frozen=True)
class RoundMetrics:
    """One peer after one round (a JSON line in reports)."""

    peer_id: str
    round: int
    time_s: float
    loss: float
    accuracy: float
    global_accuracy: float | None
    density: float
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    messages_dropped: int
    drops: dict[str, int]
    merge: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
