"""spargo monitor against the fixture broker: snapshots, the table, bad arguments."""

from __future__ import annotations

import argparse
import json

import pytest
from rich.console import Console

from spargo.node.monitor import SwarmView, add_parser, run, run_monitor
from spargo.node.transports.broker import Mosquitto
from spargo.node.transports.mqtt import MqttConfig, MqttTransport

STATUS = {"round": 7, "accuracy": 0.91, "loss": 0.3, "density": 0.25, "bytes_sent": 12_000_000,
          "bytes_received": 11_000_000, "drops": 2, "updated_at": 1.0e9}  # fmt: skip


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["monitor", *argv])


async def test_once_json_shows_online_and_offline_peers(
    mosquitto: Mosquitto, swarm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = MqttConfig(url=mosquitto.url, swarm=swarm)
    async with MqttTransport(config, "a") as a:
        await a.publish_status(STATUS)
        async with MqttTransport(config, "b") as b:
            await b.publish_status({"round": 3})  # a peer that reports only some keys
        args = parse("--broker", mosquitto.url, "--swarm", swarm, "--once", "--json",
                     "--settle-s", "0.3")  # fmt: skip
        assert await run_monitor(args) == 0
    snapshot = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert snapshot["swarm"] == swarm
    rows = {row["peer_id"]: row for row in snapshot["peers"]}
    assert rows["a"] == {"peer_id": "a", "online": True, **STATUS}
    assert rows["b"]["online"] is False
    assert rows["b"]["round"] == 3
    assert rows["b"]["accuracy"] is None


def test_sync_run_prints_a_table(
    mosquitto: Mosquitto, swarm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse("--broker", mosquitto.url, "--swarm", swarm, "--once", "--settle-s", "0.1")
    assert run(args) == 0  # an empty swarm: an empty table, promptly
    assert f"swarm {swarm}" in capsys.readouterr().out


def test_table_renders_every_column() -> None:
    view = SwarmView("s")
    view.apply("presence", "p1", {"online": True})
    view.apply("status", "p1", {**STATUS, "drops": {"replay": 2, "chunk": 1}})
    view.apply("status", "p2", None)  # undecodable status: ignored
    console = Console(record=True, width=200)
    console.print(view.table())
    text = console.export_text()
    assert "p1" in text
    assert "p2" not in text
    for cell in ("yes", "0.9100", "0.2500", "12.00 MB", "11.00 MB", " 3 "):
        assert cell in text


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "mqtt://", "mqtt://127.0.0.1:99999"])
async def test_bad_url_is_one_line_and_exit_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_monitor(parse("--broker", url, "--swarm", "s", "--once")) == 2
    err = capsys.readouterr().err
    assert err.startswith("spargo monitor: error:")
    assert err.count("\n") == 1


async def test_unreachable_broker_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from spargo.node.transports.broker import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"
    assert await run_monitor(parse("--broker", url, "--swarm", "s", "--once")) == 1
    assert capsys.readouterr().err.startswith("spargo monitor: error:")
