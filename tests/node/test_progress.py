"""The shared progress component: done/total, ETA (resumed steps excluded), notes, the bar."""

from __future__ import annotations

import io
import math
import time

import pytest

from spargo.node.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_it_draws_nothing_but_still_estimates() -> None:
    stream = io.StringIO()
    with Progress(4, label="cells", stream=stream) as bar:
        assert math.isnan(bar.eta_s())
        assert bar.eta_text() == "ETA ?"
        time.sleep(0.05)
        bar.update(status="first")
        assert bar.done == 1
        assert 0.1 <= bar.eta_s() < 5  # three more steps at the pace of the first
        bar.note("cell 1/4 done")
    assert stream.getvalue() == "cell 1/4 done\n"


def test_resumed_steps_do_not_shorten_the_eta() -> None:
    with Progress(10, label="cells", stream=io.StringIO()) as bar:
        bar.skip(8, "8 resumed")
        assert bar.done == 8
        assert math.isnan(bar.eta_s())  # nothing was worked yet
        time.sleep(0.05)
        bar.update()
        assert bar.eta_s() >= 0.04  # one more step at the pace of the one worked


def test_on_a_terminal_the_bar_shows_counts_eta_and_status() -> None:
    stream = _Terminal()
    with Progress(10, label="simulating", unit="rounds", stream=stream) as bar:
        bar.update(3, "accuracy 0.812  1.20 MB")
        bar.note("a line above the bar")
    text = stream.getvalue()
    for needle in ("simulating", "3/10", "rounds", "ETA", "accuracy 0.812", "a line above"):
        assert needle in text


def test_a_negative_total_is_refused() -> None:
    with pytest.raises(ValueError, match="total must be >= 0"):
        Progress(-1, label="x")
