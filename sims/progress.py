"""Per-round progress: a rich bar on stderr (only on a terminal) and one line per round on stdout.

The stdout line (``round  N/R  accuracy A  density D  sent M MB``) is stable: scripts and tests
read it.
"""

from __future__ import annotations

import math
import sys
from types import TracebackType
from typing import Any, Self

from spargo.node.metrics import RoundMetrics


class Progress:
    """Context manager whose ``update(round_index, metrics)`` is a runner ``on_round``."""

    def __init__(
        self, rounds: int, *, lines: bool = True, bar: bool = True, basis: str = "global"
    ) -> None:
        self.rounds = rounds
        self.basis = basis
        self.lines = lines
        self.bar = bar and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Self:
        if self.bar:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("[bold]simulating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("rounds", total=self.rounds, status="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, round_index: int, metrics: list[RoundMetrics]) -> None:
        """Report one finished round."""
        acc = [
            m.global_accuracy
            if m.global_accuracy is not None and self.basis == "global"
            else m.accuracy
            for m in metrics
        ]
        acc = [a for a in acc if not math.isnan(a)]
        mean = sum(acc) / len(acc) if acc else math.nan
        density = sum(m.density for m in metrics) / max(1, len(metrics))
        sent = sum(m.bytes_sent for m in metrics)
        if self._progress is not None:
            self._progress.update(
                self._task, completed=round_index + 1, status=f"accuracy {mean:.3f}"
            )
        if self.lines:
            print(
                f"round {round_index + 1:>3}/{self.rounds}  accuracy {mean:6.3f}  "
                f"({self.basis})  "
                f"density {density:5.3f}  sent {sent / 1e6:8.2f} MB",
                flush=True,
            )
