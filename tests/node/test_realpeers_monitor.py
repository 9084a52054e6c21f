"""`spargo monitor` shows what a peer reports about its health: silent neighbours in the row,
drops by reason in the JSON, and strict JSON even when a peer reports NaN."""

from __future__ import annotations

import json
import math

import pytest

from spargo.node.broker import Mosquitto
from spargo.node.monitor import run_monitor
from spargo.node.peer import status_of
from spargo.node.transports.mqtt import MqttConfig, MqttTransport
from spargo.node.watch_view import SwarmView
from tests.node.test_monitor import STATUS, Clock, parse, render


def test_a_peer_with_silent_neighbours_shows_them_in_its_row() -> None:
    view = SwarmView("s", clock=Clock())
    view.apply("presence", "p1", {"online": True})
    view.apply("presence", "p2", {"online": True})
    view.apply("status", "p1", {**STATUS, "silent": ["p3", "p4"]})
    view.apply("status", "p2", dict(STATUS))
    text = render(view, 100)
    header = next(line for line in text.splitlines() if line.startswith("peer "))
    assert "silent" in header
    row = next(line for line in text.splitlines() if line.startswith("p1 "))
    assert "p3,p4" in row
    assert max(len(line) for line in render(view, 80).splitlines()) <= 80


def test_the_status_record_carries_drops_by_reason_and_silence() -> None:
    record = {"peer_id": "p", "round": 3, "accuracy": 0.5, "loss": 1.0, "density": 1.0,
              "bytes_sent": 1, "bytes_received": 2, "messages_dropped": 5,
              "drops": {"stale": 2, "transport_bad_envelope": 3}, "send_failures": 1,
              "silent": ["q"]}  # fmt: skip
    status = status_of(record)
    assert status["drops"] == 5
    assert status["drop_reasons"] == {"stale": 2, "transport_bad_envelope": 3}
    assert status["silent"] == ["q"]
    assert status["send_failures"] == 1


async def test_once_json_is_strict_when_a_peer_reports_nan(
    mosquitto: Mosquitto, swarm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = MqttConfig(url=mosquitto.url, swarm=swarm)
    async with MqttTransport(config, "a") as a:
        await a.publish_status({**STATUS, "accuracy": math.nan, "drop_reasons": {"stale": 1}})
        args = parse("--broker", mosquitto.url, "--swarm", swarm, "--once", "--json",
                     "--settle-s", "0.3")  # fmt: skip
        assert await run_monitor(args) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    snapshot = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    row = snapshot["peers"][0]
    assert row["accuracy"] is None
    assert row["drop_reasons"] == {"stale": 1}
