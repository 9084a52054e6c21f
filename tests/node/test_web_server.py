"""The dashboard's HTTP and WebSocket endpoints (starlette's test client and a real uvicorn),
the token gate, the origin check, the ``--web*`` flags and their one-line errors."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import urllib.request

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from spargo.cli import missing_extra
from spargo.node.watch_view import SwarmView
from spargo.node.web.options import WebOptions, add_web_flags, web_options
from spargo.node.web.server import COOKIE, DashboardServer, create_app
from spargo.node.web.state import WebState


def busy_state() -> WebState:
    state = WebState(SwarmView("lab"))
    state.apply("presence", "peer-0", {"online": True})
    state.apply("status", "peer-0", {"round": 3, "accuracy": 0.9, "bytes_sent": 5})
    return state


def test_page_static_files_and_state() -> None:
    client = TestClient(create_app(busy_state()))
    page = client.get("/")
    assert page.status_code == 200
    assert "spargo" in page.text
    assert "static/dashboard.js" in page.text
    assert client.get("/static/dashboard.js").status_code == 200
    vendored = client.get("/static/vendor/uPlot.iife.min.js")
    assert vendored.status_code == 200
    assert "uPlot" in vendored.text[:200]
    assert client.get("/static/vendor/LICENSE.uPlot").status_code == 200
    assert client.get("/favicon.ico").status_code == 204
    state = client.get("/state").json()
    assert [p["peer_id"] for p in state["peers"]] == ["peer-0"]
    assert state["series"]["round"] == [3]


def test_read_only() -> None:
    client = TestClient(create_app(busy_state()))
    for method in ("POST", "PUT", "DELETE"):
        assert client.request(method, "/state").status_code == 405
        assert client.request(method, "/").status_code == 405


def test_websocket_pushes_snapshots_as_the_state_changes() -> None:
    state = busy_state()
    client = TestClient(create_app(state, refresh_s=0.05))
    with client.websocket_connect("/ws") as ws:
        first = ws.receive_json()
        assert first["swarm"] == "lab"
        assert len(first["peers"]) == 1
        state.apply("status", "peer-1", {"round": 4, "accuracy": 0.8})
        ws.send_text("ignored: the socket is read-only")
        for _ in range(50):
            later = ws.receive_json()
            if len(later["peers"]) == 2:
                break
        assert [p["peer_id"] for p in later["peers"]] == ["peer-0", "peer-1"]
        assert later["version"] > first["version"]


def test_websocket_from_another_origin_is_refused() -> None:
    client = TestClient(create_app(busy_state()))
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws,
    ):
        ws.receive_json()


def test_token_protects_page_state_static_and_socket() -> None:
    client = TestClient(create_app(busy_state(), token="s3cret"))
    for path in ("/", "/state", "/static/dashboard.js"):
        denied = client.get(path)
        assert denied.status_code == 401
        assert "token" in denied.text
    assert client.get("/?token=wrong").status_code == 401
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws") as ws:
        ws.receive_json()
    page = client.get("/?token=s3cret")
    assert page.status_code == 200
    assert client.cookies.get(COOKIE) == "s3cret"  # what the page's later requests carry
    assert client.get("/state").status_code == 200
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["swarm"] == "lab"


def test_real_server_on_a_free_port_and_a_busy_one() -> None:
    with DashboardServer(busy_state(), WebOptions(port=0)) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/"
        with urllib.request.urlopen(server.url + "state", timeout=5) as response:
            assert json.load(response)["peers"][0]["round"] == 3
        with pytest.raises(OSError):
            DashboardServer(busy_state(), WebOptions(port=server.port)).start()
    with socket.socket() as probe:  # stopped: nothing listens there any more
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        probe.bind(("127.0.0.1", server.port))
        probe.listen()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_web_flags(parser)
    return parser.parse_args(list(argv))


def test_web_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert web_options(parse()) is None
    assert web_options(parse("--web", "8080")) == WebOptions("127.0.0.1", 8080)
    assert web_options(parse("--web", "[::1]:9")) == WebOptions("::1", 9)
    assert web_options(parse("--web", "localhost:0", "--web-token", "t")) == WebOptions(
        "localhost", 0, "t"
    )
    assert capsys.readouterr().err == ""
    public = web_options(parse("--web", "0.0.0.0:8080", "--web-public"))
    assert public == WebOptions("0.0.0.0", 8080)
    assert "readable by anyone" in capsys.readouterr().err
    for argv, fragment in (
        (("--web", "0.0.0.0:8080"), "--web-public"),
        (("--web", "http"), "[HOST:]PORT"),
        (("--web", "70000"), "0..65535"),
        (("--web", ":80"), "empty host"),
        (("--web", "80", "--web-token", "a b"), "--web-token"),
        (("--web", "80", "--web-silent-rounds", "0"), "--web-silent-rounds"),
    ):
        with pytest.raises(ValueError, match="--web") as caught:
            web_options(parse(*argv))
        assert fragment in str(caught.value)


def test_token_url() -> None:
    assert WebOptions("::1", 5, "t").url() == "http://[::1]:5/?token=t"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["monitor", "--broker", "mqtt://127.0.0.1:1", "--swarm", "s", "--web", "10.0.0.1:8"],
         "--web-public"),
        (["monitor", "--broker", "mqtt://127.0.0.1:1", "--swarm", "s", "--web", "8", "--once"],
         "--once"),
        (["sim", "--web", "nope"], "[HOST:]PORT"),
        (["lab", "--transport", "tcp", "--web", "0"], "--transport mqtt"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line(argv: list[str], fragment: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "spargo", *argv], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_missing_server_library_names_the_web_extra() -> None:
    for module in ("starlette", "uvicorn.config", "websockets"):
        assert missing_extra("monitor", module) == "web"
        assert missing_extra("sim", module) == "web"
