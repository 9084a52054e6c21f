"""One progress component for every long job: simulated rounds, sweep cells, lab runs, examples.

``Progress(total, label=...)`` is a context manager. On a terminal it draws a rich bar on
stderr: the label, the bar, ``done/total``, the elapsed time, the ETA and a status text the
caller sets (the current accuracy and MB sent, the last finished cell...). Off a terminal it
draws nothing, and ``eta_s()``/``eta_text()`` still give the same estimate for log lines.
``note(text)`` prints one line to stderr above the bar (or plainly when there is none).

rich is imported only when a bar is drawn, so importing this module costs nothing.
"""

from __future__ import annotations

import math
import sys
import time
from types import TracebackType
from typing import Any, Self, TextIO


class Progress:
    """Done/total with an ETA; a rich bar on stderr when stderr is a terminal."""

    def __init__(
        self,
        total: int,
        *,
        label: str,
        unit: str = "",
        bar: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        """``total``: how many steps the job has (>= 0); ``unit``: shown after done/total."""
        if total < 0:
            raise ValueError(f"a progress total must be >= 0, got {total}")
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self.status = ""
        self._skipped = 0
        self._stream = stream or sys.stderr
        self._bar = bar and self._stream.isatty()
        self._rich: Any = None
        self._task: Any = None
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        if self._bar:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self._stream),
                transient=True,
            )
            self._rich.start()
            self._task = self._rich.add_task(
                self.label, total=self.total, status="", eta=self.eta_text()
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def update(self, done: int | None = None, status: str | None = None) -> None:
        """Set the number of steps done (default: one more) and the status text."""
        self.done = self.done + 1 if done is None else done
        if status is not None:
            self.status = status
        if self._rich is not None:
            self._rich.update(
                self._task, completed=self.done, status=self.status, eta=self.eta_text()
            )

    def skip(self, steps: int, status: str | None = None) -> None:
        """Count ``steps`` as done without work (resumed ones): they do not speed the ETA."""
        self._skipped += steps
        self._started = time.monotonic()
        self.update(self.done + steps, status)

    def eta_s(self) -> float:
        """Seconds left at the average pace so far (NaN before the first step is done)."""
        worked = self.done - self._skipped
        if worked <= 0:
            return math.nan
        elapsed = time.monotonic() - self._started
        return elapsed / worked * max(0, self.total - self.done)

    def eta_text(self) -> str:
        """``ETA 1m05s`` (or ``ETA ?`` before the first step)."""
        eta = self.eta_s()
        if math.isnan(eta):
            return "ETA ?"
        minutes, seconds = divmod(round(eta), 60)
        return f"ETA {minutes}m{seconds:02d}s" if minutes else f"ETA {seconds}s"

    def note(self, text: str) -> None:
        """One line on stderr, above the bar when one is drawn."""
        if self._rich is not None:
            self._rich.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self._stream, flush=True)
