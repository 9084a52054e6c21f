"""A virtual clock for asyncio: simulated waiting costs no wall time, and runs replay exactly.

``VirtualClockLoop`` is an ordinary selector event loop whose ``time()`` is a counter. When
the loop would block waiting for its next timer, the selector instead returns at once and the
clock jumps to that timer (trio's "autojump" idea). Everything in the node reads time from
the loop, so a node runs unchanged on it. Training must run inline (not in threads) on this
loop, or the clock could jump past work still in progress.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SimulationStalled(RuntimeError):
    """Every task is waiting and no timer is scheduled: the simulation can never progress."""


class _AutojumpSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise SimulationStalled(
                "all simulated peers are waiting with no timer pending (a deadlock in the scenario)"
            )
        self.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on simulated time, starting at 0.0 seconds."""

    def __init__(self) -> None:
        self._autojump = _AutojumpSelector()
        super().__init__(self._autojump)
        # Timers due within this resolution run together; keep it tiny for exact replay.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._autojump.now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh virtual-clock loop and close it."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
