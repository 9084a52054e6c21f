"""spargo monitor: snapshots from the fixture broker, the 80-column layout, stale and hidden
peers on an injected clock, the no-peers line, and peer strings drawn as text, not markup."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from rich.console import Console

from spargo.node.broker import Mosquitto, MosquittoConfig
from spargo.node.monitor import add_parser, follow, run, run_monitor
from spargo.node.transports.mqtt import MqttConfig, MqttTransport
from spargo.node.watch_view import SwarmView
from tests.node.conftest import Pki

STATUS = {"round": 7, "accuracy": 0.91, "loss": 0.3, "density": 0.25, "bytes_sent": 12_000_000,
          "bytes_received": 11_000_000, "drops": 2, "updated_at": 1.0e9}  # fmt: skip
SHORT_HEADERS = ("peer", "state", "rnd", "acc", "age", "drop", "sent MB", "recv MB", "loss", "dens")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["monitor", *argv])


class Clock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def render(view: SwarmView, width: int) -> str:
    console = Console(record=True, width=width, force_terminal=False)
    console.print(view.render(width))
    return console.export_text()


def busy_swarm(clock: Clock, peers: list[str]) -> SwarmView:
    view = SwarmView("lab-7f3a", clock=clock)
    for i, peer in enumerate(peers):
        view.apply("presence", peer, {"online": True, "updated_at": clock.now})
        status = {**STATUS, "round": 120 + i, "bytes_sent": 123_456_789, "updated_at": clock.now}
        view.apply("status", peer, status)
    return view


# -- layout ---------------------------------------------------------------------------------


def test_80_columns_show_whole_peer_ids_and_headers() -> None:
    peers = [f"peer-{i}" for i in range(12)] + ["worker-eu-west-17"]
    text = render(busy_swarm(Clock(), peers), 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    header = next(line for line in lines if line.startswith("peer "))
    for name in SHORT_HEADERS:
        assert re.search(rf"(^| ){re.escape(name)}( |$)", header), name
    for peer in peers:
        assert any(line.split()[0] == peer for line in lines), peer
    assert "123.5" in text  # the MB columns kept their values
    assert "not shown" not in text
    assert [line.split()[0] for line in lines[3:6]] == ["peer-0", "peer-1", "peer-2"]  # 2 < 10


def test_wide_terminal_gets_every_column_with_full_headers() -> None:
    text = render(busy_swarm(Clock(), ["a", "b"]), 120)
    header = next(line for line in text.splitlines() if line.startswith("peer "))
    assert header.split() == ["peer", "state", "round", "accuracy", "age", "drops", "sent", "MB",
                              "received", "MB", "loss", "density"]  # fmt: skip
    assert "not shown" not in text


def test_very_narrow_terminal_keeps_peer_and_state() -> None:
    text = render(busy_swarm(Clock(), ["peer-0", "peer-1"]), 40)
    assert max(len(line) for line in text.splitlines()) <= 40
    assert "peer-0" in text
    assert "online" in text
    assert "not shown:" in text


def test_every_value_is_formatted() -> None:
    view = SwarmView("s", clock=Clock())
    view.apply("presence", "p1", {"online": True})
    view.apply("status", "p1", {**STATUS, "drops": {"replay": 2, "chunk": 1}})
    view.apply("status", "p2", None)  # undecodable status: ignored
    text = render(view, 200)
    assert "p2" not in text
    for cell in ("online", "0.910", "0.250", "12.0", "11.0", " 3 "):
        assert cell in text


# -- stale and hidden peers (injected clock) -------------------------------------------------


def test_silent_peers_turn_stale_then_hidden() -> None:
    clock = Clock()
    view = SwarmView("s", stale_s=30, hide_s=300, clock=clock)
    view.apply("presence", "a", {"online": True, "updated_at": clock.now})
    view.apply("presence", "b", {"online": False, "updated_at": clock.now})
    assert [(r["peer_id"], r["state"]) for r in view.rows()] == [("a", "online"), ("b", "offline")]
    clock.now += 31
    assert [r["state"] for r in view.rows()] == ["stale", "offline"]
    assert view.rows()[0]["age_s"] == 31
    view.apply("status", "a", {"round": 3})  # no updated_at: heard now
    assert view.rows()[0]["state"] == "online"
    clock.now += 301
    assert view.rows() == []
    assert view.hidden() == 2
    assert "2 silent for more than 300 s" in str(view.empty_message())


def test_retained_ghost_is_hidden_by_its_own_timestamp() -> None:
    clock = Clock()
    view = SwarmView("s", clock=clock)
    view.apply("presence", "ghost", {"online": True, "updated_at": clock.now - 3600})
    view.apply("status", "future", {"round": 1, "updated_at": clock.now + 99})  # clamped
    view.apply("status", "junk", {"round": 1, "updated_at": "yesterday"})  # heard now
    assert [r["peer_id"] for r in view.rows()] == ["future", "junk"]
    assert view.rows()[0]["age_s"] == 0
    assert view.snapshot()["hidden"] == 1


def test_stale_and_hide_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for flags in (["--stale-s", "0"], ["--stale-s", "60", "--hide-s", "30"], ["--refresh-s", "-1"]):
        args = parse("--broker", "mqtt://127.0.0.1:1", "--swarm", "s", "--once", *flags)
        assert asyncio.run(run_monitor(args)) == 2
        err = capsys.readouterr().err
        assert err.startswith("spargo monitor: error: --")
        assert err.count("\n") == 1


async def test_follow_redraws_on_a_timer_while_peers_are_silent() -> None:
    async def one_event() -> AsyncIterator[tuple[str, str, dict[str, object] | None]]:
        yield "presence", "a", {"online": True}
        await asyncio.Event().wait()  # then silence

    view = SwarmView("s", clock=Clock())
    draws: list[int] = []
    enough = asyncio.Event()

    def draw() -> None:
        draws.append(len(view.rows()))
        if len(draws) >= 4:
            enough.set()

    task = asyncio.create_task(follow(one_event(), view, draw, refresh_s=0.01))
    await asyncio.wait_for(enough.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert draws[-1] == 1  # redrawn after the last event, with nothing new arriving


# -- against the fixture broker ---------------------------------------------------------------


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
    assert snapshot["hidden"] == 0
    rows = {row.pop("peer_id"): row for row in snapshot["peers"]}
    assert rows["a"].pop("age_s") < 30
    assert rows["a"] == {"online": True, "state": "online", **STATUS}
    assert rows["b"]["online"] is False
    assert rows["b"]["state"] == "offline"
    assert rows["b"]["round"] == 3
    assert rows["b"]["accuracy"] is None


def test_swarm_without_peers_is_one_line_and_exit_1(
    mosquitto: Mosquitto, swarm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse("--broker", mosquitto.url, "--swarm", swarm, "--once", "--settle-s", "0.1")
    assert run(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"spargo monitor: swarm {swarm!r} has no peers: no presence or status seen\n"


async def publish_retained(mosquitto: Mosquitto, topic: str, payload: bytes) -> None:
    """Publish as a foreign client (plain aiomqtt, none of spargo's transport)."""
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(topic, payload, qos=1, retain=True)


async def test_markup_from_a_foreign_client_is_drawn_as_text(
    mosquitto: Mosquitto, swarm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = {"round": "[/bold]", "accuracy": "[red]x", "updated_at": time.time()}
    await publish_retained(mosquitto, f"spargo/{swarm}/status/[bold]p", json.dumps(status).encode())
    args = parse("--broker", mosquitto.url, "--swarm", swarm, "--once", "--settle-s", "0.3")
    assert await run_monitor(args) == 0
    out = capsys.readouterr().out
    assert "[bold]p" in out
    assert "[/bold]" in out
    assert "[red]x" in out


async def test_ghost_of_an_old_run_is_hidden_and_said(
    mosquitto: Mosquitto, swarm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = {"peer_id": "old", "online": True, "updated_at": time.time() - 3600}
    await publish_retained(mosquitto, f"spargo/{swarm}/presence/old", json.dumps(ghost).encode())
    args = parse("--broker", mosquitto.url, "--swarm", swarm, "--once", "--json",
                 "--settle-s", "0.3")  # fmt: skip
    assert await run_monitor(args) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["peers"] == []
    assert "no live peers: 1 silent for more than 300 s" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "mqtt://", "mqtt://127.0.0.1:99999"])
async def test_bad_url_is_one_line_and_exit_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_monitor(parse("--broker", url, "--swarm", "s", "--once")) == 2
    err = capsys.readouterr().err
    assert err.startswith("spargo monitor: error:")
    assert err.count("\n") == 1


async def test_unreachable_broker_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from spargo.node.broker import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"
    assert await run_monitor(parse("--broker", url, "--swarm", "s", "--once")) == 1
    assert capsys.readouterr().err.startswith("spargo monitor: error:")


async def test_live_mode_reports_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    from spargo.node.broker import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"
    assert await run_monitor(parse("--broker", url, "--swarm", "s", "--json")) == 1
    assert capsys.readouterr().err.startswith("spargo monitor: error:")


async def test_client_certificate_for_a_broker_that_requires_one(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    config = MosquittoConfig(
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca, require_client_cert=True
    )
    async with Mosquitto(config) as broker:
        peer = MqttConfig(url=broker.url, swarm="mtls", tls_ca=pki.ca, tls_cert=pki.client_cert,
                          tls_key=pki.client_key)  # fmt: skip
        async with MqttTransport(peer, "a"):
            base = ["--broker", broker.url, "--swarm", "mtls", "--once", "--settle-s", "0.3",
                    "--tls-ca", str(pki.ca)]  # fmt: skip
            assert await run_monitor(parse(*base)) == 1  # refused without a certificate
            assert capsys.readouterr().err.startswith("spargo monitor: error:")
            cert = ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
            assert await run_monitor(parse(*base, *cert)) == 0
    assert "a" in capsys.readouterr().out.split()
    assert await run_monitor(parse(*base, "--tls-cert", str(pki.client_cert))) == 2
    assert "tls_cert and tls_key" in capsys.readouterr().err
