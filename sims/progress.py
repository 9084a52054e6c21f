"""Per-round progress of a run: the shared bar (``node.progress``) and one line per round.

The line is stable (scripts and tests read it)::

    round   0 [1/30]  global* 0.412  local  0.398  density 1.000  sent     1.23 MB

Both accuracies are shown (mean over peers: global test set, each peer's own split); the
star marks the run's declared basis, the one the bar and the summary headline use.

Round numbers are 0-based everywhere in spargo: on screen, in ``rounds.jsonl`` and
``metrics.jsonl``, in ``SimResult.round_stats`` and in the scenario's round fields
(``partition_at``, churn events); ``[k/R]`` counts the rounds done. "sent" is cumulative over
every peer that ever ran (departed ones included), so it never goes down.

Lines go to stdout, or stderr under ``--json`` (stdout then carries only JSON). A closed
stdout (``spargo sim | head -1``) stops the lines quietly and asks the run to stop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from spargo.node.progress import Progress


def _acc(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"


class RoundProgress:
    """Context manager whose ``row(round_row)`` is a runner ``on_row`` callback."""

    def __init__(
        self,
        rounds: int,
        *,
        lines: bool = True,
        bar: bool = True,
        basis: str = "global",
        to_stderr: bool = False,
        on_broken_pipe: Callable[[], None] | None = None,
    ) -> None:
        """``to_stderr``: the lines go to stderr (``--json``: stdout carries only JSON)."""
        self.rounds = rounds
        self.basis = basis
        self.lines = lines
        self.to_stderr = to_stderr
        self.on_broken_pipe = on_broken_pipe
        self.bar = Progress(rounds, label="simulating", unit="rounds", bar=bar)

    def __enter__(self) -> Self:
        self.bar.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.bar.__exit__(exc_type, exc, tb)

    def row(self, row: dict[str, Any]) -> None:
        """Report one finished round (a ``SimResult.round_stats`` row)."""
        r = int(row["round"])
        acc = row["accuracy_mean"]
        mb = row["bytes_sent_total"] / 1e6
        shown = "  n/a " if acc is None else f"{acc:6.3f}"
        self.bar.update(r + 1, f"accuracy {shown.strip()}  {mb:.2f} MB")
        if not self.lines:
            return
        both = "  ".join(
            f"{b}{'*' if b == self.basis else ' '} {_acc(row.get(f'{b}_accuracy_mean'))}"
            for b in ("global", "local")
        )
        text = (
            f"round {r:>3} [{r + 1}/{self.rounds}]  {both}  "
            f"density {row['density']:5.3f}  sent {mb:7.2f} MB"  # ≤ 80 columns to round 999
        )
        # Looked up now, not at construction: while the bar is drawn, rich stands in for
        # sys.stdout/sys.stderr and prints each line above the bar.
        stream = sys.stderr if self.to_stderr else sys.stdout
        try:
            print(text, file=stream, flush=True)
        except BrokenPipeError:
            self.lines = False
            if self.on_broken_pipe is not None:
                self.on_broken_pipe()
