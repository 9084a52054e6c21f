"""Per-peer counters and per-round records (what sims, lab and monitor report), and the
strict-JSON writer every command uses for what it prints or writes (NaN/±inf → ``null``)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger("spargo.metrics")


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
    """One peer after one round (a JSON line in reports).

    ``drops`` counts by reason whichever layer dropped (the node's decoder and merge guard,
    and the transport's framing, chunking and queue, prefixed ``transport_``);
    ``silent`` names the neighbours that delivered nothing for ``silent_rounds`` rounds.
    """

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
    send_failures: int = 0
    silent: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["silent"] = list(self.silent)
        return out

    @classmethod
    def unchecked(cls, **fields: Any) -> RoundMetrics:
        """The same record as ``RoundMetrics(**fields)``, built without the frozen
        dataclass's ``object.__setattr__`` per field: the batched engine makes one per peer
        and round (10⁴–10⁵ a round), where that was most of its reporting time. Fields left
        out take their defaults; an unknown or missing required field is a TypeError."""
        unknown = fields.keys() - _FIELDS
        missing = _REQUIRED - fields.keys()
        if unknown or missing:
            raise TypeError(f"RoundMetrics: unknown {sorted(unknown)}, missing {sorted(missing)}")
        record = object.__new__(cls)
        record.__dict__.update(fields)  # defaults come from the class attributes
        return record


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def strict_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes ``NaN``/``Infinity`` (they become ``null``)."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)


class MetricsSink:
    """Appends one strict-JSON line per round to a file; a failed write is a warning and the
    line is kept and retried with the next one (bounded), so a full disk never stops training.

    Opening checks the path at start-up: ``OSError`` when it cannot be written.
    """

    MAX_PENDING = 10_000

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.failures = 0
        self._pending: list[str] = []
        self._handle = self.path.open("a")

    def write(self, record: dict[str, Any]) -> bool:
        """Append ``record`` (and any lines a failed write left); whether all were written."""
        self._pending.append(strict_json(record, sort_keys=True) + "\n")
        del self._pending[: -self.MAX_PENDING]
        try:
            self._handle.write("".join(self._pending))
            self._handle.flush()
        except (OSError, ValueError) as exc:  # ValueError: the handle a failed reopen closed
            self.failures += 1
            log.warning(
                "metrics line for round %s not written to %s (%s); will retry with the next",
                record.get("round"),
                self.path,
                exc,
            )
            self._reopen()
            return False
        self._pending.clear()
        return True

    def _reopen(self) -> None:
        # A failed flush leaves the buffer half-written: start from a fresh handle.
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(OSError):  # the next write fails again and says so
            self._handle = self.path.open("a")

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError as exc:
            log.warning("closing %s: %s", self.path, exc)


#: RoundMetrics' field names, and those without a default (``RoundMetrics.unchecked``).
_FIELDS = frozenset(f.name for f in fields(RoundMetrics))
_REQUIRED = frozenset(f.name for f in fields(RoundMetrics) if f.default is MISSING)
