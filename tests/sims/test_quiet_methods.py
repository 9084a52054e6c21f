"""A method that expects no messages is not a failing peer: no silence warnings for it.

``local`` sends nothing and waits for nothing; the node's silence tracking (node.health) must
not name its neighbours as silent — in rounds mode or async mode — while a method that does
expect messages still warns when they stop (a partition here).
"""

from __future__ import annotations

import logging

import pytest

from spargo.sims import run
from tests.sims.conftest import small


@pytest.mark.parametrize("mode", ["rounds", "async"])
def test_local_peers_report_no_silent_neighbours(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spargo.node")
    result = run(small(method="local", rounds=6, mode=mode))
    assert result.rounds
    assert all(m.silent == () for m in result.rounds)
    assert not [r for r in caplog.records if "merged nothing" in r.getMessage()]
    assert not [r for r in caplog.records if "nothing arrived" in r.getMessage()]


def test_a_gossiping_peer_still_warns_when_its_neighbours_go_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="spargo.node")
    result = run(small(rounds=8, partition_at=(1, 7)))
    assert any(m.silent for m in result.rounds)
    assert [r for r in caplog.records if "rounds from" in r.getMessage()]
