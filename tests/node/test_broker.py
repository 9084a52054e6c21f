"""The Mosquitto launcher: generated config, lifecycle, no process left behind, helper files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from spargo.node.broker import (
    BrokerError,
    Mosquitto,
    MosquittoConfig,
    free_port,
)
from spargo.node.broker_auth import AclRule, write_acl_file, write_password_file


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); the launcher reaps its child, so check the state too.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def accepts(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def test_config_raises_queue_limits_and_binds_loopback(tmp_path: Path) -> None:
    text = MosquittoConfig().render(1883, tmp_path)
    assert "listener 1883 127.0.0.1" in text
    assert "max_queued_messages 1000000" in text
    assert "message_size_limit 67108864" in text
    assert "allow_anonymous true" in text
    secured = MosquittoConfig(password_file=tmp_path / "p", acl_file=tmp_path / "a")
    text = secured.render(1, tmp_path)
    assert "allow_anonymous false" in text
    assert f"password_file {tmp_path / 'p'}" in text
    assert f"acl_file {tmp_path / 'a'}" in text
    tls = MosquittoConfig(tls_cert=tmp_path / "c", tls_key=tmp_path / "k", tls_ca=tmp_path / "ca")
    assert "require_certificate false" in tls.render(1, tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": 70000}, "port"),
        ({"tls_cert": Path("c")}, "tls_key"),
        ({"require_client_cert": True}, "tls_ca"),
        ({"message_size_limit_bytes": 0}, "message_size_limit"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MosquittoConfig(**kwargs)  # type: ignore[arg-type]


def test_sync_lifecycle_keeps_the_port_and_leaves_no_process() -> None:
    broker = Mosquitto()
    with pytest.raises(BrokerError, match="not been started"):
        _ = broker.url
    broker.start()
    pid, port = broker.pid, broker.port
    assert pid is not None
    assert broker.url == f"mqtt://127.0.0.1:{port}"
    assert accepts("127.0.0.1", port)
    broker.stop()
    assert not alive(pid)
    broker.start()  # a restart comes back on the same port
    assert broker.port == port
    assert accepts("127.0.0.1", port)
    second_pid = broker.pid
    assert second_pid is not None
    broker.kill()
    assert not alive(second_pid)
    workdir = broker.workdir
    broker.close()
    assert not workdir.exists()


async def test_async_context_manager_stops_the_broker() -> None:
    async with Mosquitto() as broker:
        pid = broker.pid
        assert pid is not None
        assert broker.running
    assert not alive(pid)
    assert not broker.running


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = Mosquitto(MosquittoConfig(port=port))
        # The port accepts connections (the squatter's): the launcher must not be fooled.
        with pytest.raises(BrokerError, match="mosquitto exited"):
            broker.start()
        assert not broker.running
        broker.close()


def test_missing_executable_is_a_clear_error() -> None:
    broker = Mosquitto(MosquittoConfig(executable="/nonexistent/mosquitto"))
    with pytest.raises((BrokerError, OSError)):
        broker.start()
    broker.close()


def test_password_file_is_hashed(tmp_path: Path) -> None:
    path = write_password_file(tmp_path / "passwd", {"alice": "s3cret", "bob": "pw"})
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "bob"]
    assert "s3cret" not in path.read_text()
    with pytest.raises(ValueError, match="username"):
        write_password_file(tmp_path / "bad", {"a:b": "x"})


def test_acl_file_lists_patterns_then_users(tmp_path: Path) -> None:
    path = write_acl_file(
        tmp_path / "acl",
        {"alice": [AclRule("write", "spargo/s/inbox/bob")]},
        patterns=[AclRule("read", "spargo/s/inbox/%u")],
    )
    assert path.read_text().splitlines() == [
        "pattern read spargo/s/inbox/%u",
        "",
        "user alice",
        "topic write spargo/s/inbox/bob",
    ]


def test_free_port_is_bindable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", free_port()))
