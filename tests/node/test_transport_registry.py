"""The transport registry, the shared plumbing in the base, and error translation by type.

Every registered kind must have a conformance-suite subclass in ``test_transport_<kind>``:
adding a transport is one module, one registry line and that subclass.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
from pathlib import Path
from typing import Any

import pytest
from aiomqtt import MqttError
from aiomqtt.exceptions import MqttConnectError

from spargo.node.errors import ConfigError, ConnectError
from spargo.node.transports.base import BackgroundTasks, NetworkTransport
from spargo.node.transports.mqtt import MqttTransport, translate
from spargo.node.transports.mqtt_config import MqttConfig
from spargo.node.transports.registry import (
    TRANSPORTS,
    TransportSpec,
    config_from_table,
    make_transport,
    spec_for,
)
from spargo.node.transports.tcp import TcpTransport
from tests.node.conformance import TransportConformance


@pytest.mark.parametrize("kind", list(TRANSPORTS))
def test_every_kind_has_a_conformance_suite(kind: str) -> None:
    module = importlib.import_module(f"tests.node.test_transport_{kind}")
    suites = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, TransportConformance)
        and value is not TransportConformance
    ]
    assert [suite.kind for suite in suites].count(kind) >= 1


@pytest.mark.parametrize("spec", list(TRANSPORTS.values()), ids=list(TRANSPORTS))
def test_every_spec_names_a_config_dataclass_and_a_network_transport(spec: TransportSpec) -> None:
    assert dataclasses.is_dataclass(spec.config_type())
    assert issubclass(spec.transport_type(), NetworkTransport)
    config = spec.make_config({}, "swarm")  # every setting has a default
    assert isinstance(spec.build(config, "p"), spec.transport_type())


def test_make_transport_builds_each_kind(tmp_path: Path) -> None:
    assert isinstance(make_transport({"url": "mqtt://127.0.0.1:1"}, "p", "s"), MqttTransport)
    assert isinstance(make_transport({"kind": "tcp", "port": 0}, "p", "s"), TcpTransport)
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until connecting")
    config = spec_for("mqtt").make_config({"tls_ca": str(ca)}, "s")
    assert isinstance(config, MqttConfig)
    assert config.tls_ca == ca  # paths arrive as strings from TOML


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"kind": "mqtt", "tls_ca": "/no/such/ca.pem"}, "tls_ca: file '/no/such/ca.pem' does not"),
        ({"kind": "mqtt", "port": "1883"}, "port must be a whole number, got '1883'"),
        ({"kind": "mqtt", "clean_session": 1}, "clean_session must be true or false"),
        ({"kind": "tcp", "connect_timeout_s": True}, "connect_timeout_s must be a number"),
        ({"kind": "tcp", "peers": ["a"]}, "peers must be a table"),
        ({"kind": "mqtt", "usernme": "x"}, "unknown key 'usernme' (did you mean 'username'?)"),
    ],
)
def test_wrong_types_and_missing_files_name_the_key(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_transport(table, "p", "s")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_tables_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="kind 'carrier-pigeon' is unknown; use one of mqtt, tcp"):
        spec_for("carrier-pigeon")
    with pytest.raises(ConfigError, match=r"unknown key 'colour'; valid keys: .*url"):
        make_transport({"kind": "mqtt", "colour": "red"}, "p", "s")
    with pytest.raises(ConfigError, match=r"^\[transport\] port 70000 is not in 0..65535"):
        make_transport({"kind": "tcp", "port": 70000}, "p", "s")
    with pytest.raises(ConfigError, match="chunk_bytes"):
        config_from_table(MqttConfig, {"chunk_bytes": 1})


def test_cli_choices_come_from_the_registry() -> None:
    from spargo.node.peer import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    for kind in TRANSPORTS:
        assert parser.parse_args(["node", "--transport", kind]).transport == kind
    with pytest.raises(SystemExit):
        parser.parse_args(["node", "--transport", "udp"])


# -- error translation keys on types and return codes ----------------------------------------


def _raised(exc: BaseException) -> BaseException:
    """``exc`` as it looks after being raised and caught (context filled in)."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def _aiomqtt_timeout() -> MqttError:
    """An MqttError raised the way aiomqtt raises its timeouts: ``from None`` in a handler."""
    try:
        try:
            raise TimeoutError
        except TimeoutError:
            raise MqttError("whatever aiomqtt says") from None
    except MqttError as exc:
        return exc


def test_translate_reads_a_timeout_from_the_exception_context() -> None:
    assert "no CONNACK" in str(translate(_aiomqtt_timeout(), "connecting"))


def test_translate_ignores_message_text() -> None:
    lookalike = _raised(MqttError("Operation timed out"))  # the text, but no timeout
    assert "no CONNACK" not in str(translate(lookalike, "connecting"))
    refused = translate(MqttConnectError(5), "connecting")
    assert isinstance(refused, ConnectError)
    assert "not authorised" in str(refused)


# -- background tasks: one TaskGroup, named tasks, failures contained --------------------------


async def test_a_failing_background_task_is_logged_and_spares_its_siblings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = BackgroundTasks("owner")
    await tasks.start()
    sibling_ran = asyncio.Event()

    async def fail() -> None:
        raise RuntimeError("boom")

    async def sibling() -> None:
        await asyncio.sleep(0.01)
        sibling_ran.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR):
        failing = tasks.spawn(fail(), "fail")
        alive = tasks.spawn(sibling(), "sibling")
        assert alive.get_name() == "owner-sibling"
        await asyncio.wait_for(sibling_ran.wait(), 5)
        await asyncio.wait_for(asyncio.shield(failing), 5)
    assert "background task fail failed" in caplog.text
    assert not alive.done()
    await tasks.aclose()
    assert alive.cancelled()
    assert not tasks.running
    await tasks.aclose()  # idempotent


async def test_spawn_after_close_refuses_and_closes_the_coroutine() -> None:
    tasks = BackgroundTasks("owner")

    async def work() -> None:
        return None

    coro = work()
    with pytest.raises(RuntimeError, match="not running"):
        tasks.spawn(coro, "late")
    assert coro.cr_frame is None  # closed: no "never awaited" warning
