"""The dashboard's HTTP and WebSocket server: starlette routes, uvicorn in a thread of its own.

Routes, all read-only (GET and one WebSocket; nothing a visitor sends changes anything):

* ``/`` — the page (``static/index.html``); ``/static/...`` — its script, style and the
  vendored uPlot;
* ``/state`` — :meth:`WebState.snapshot` as JSON, for scripts and tests;
* ``/ws`` — the same snapshot pushed every ``refresh_s`` seconds (the page redraws on each).

With a token, every route needs it: ``?token=`` on the first visit, which sets an HttpOnly,
SameSite=Strict cookie that the page's later requests and its WebSocket carry. A WebSocket
from a page of another origin is refused (a site in the same browser cannot read the swarm).
uvicorn runs in a daemon thread with its own event loop, so the monitor's, the lab's or the
simulator's own loop and its Ctrl-C handling stay as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from spargo.node.web.options import WebOptions
from spargo.node.web.state import WebState

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "spargo_dashboard"
_NO_CACHE = {"Cache-Control": "no-store"}


def create_app(state: WebState, token: str | None = None, refresh_s: float = 1.0) -> Starlette:
    """The ASGI app serving ``state`` (see the module docstring for its routes)."""

    async def index(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", headers=_NO_CACHE)
        if token is not None:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    async def snapshot(request: Request) -> Response:
        return JSONResponse(state.snapshot(), headers=_NO_CACHE)

    async def stream(websocket: WebSocket) -> None:
        if not _same_origin(websocket):
            await websocket.close(code=1008)
            return
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.send_text(json.dumps(state.snapshot(), allow_nan=False))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(refresh_s):
                        message = await websocket.receive()  # read-only: only a close matters
                        if message["type"] == "websocket.disconnect":
                            return

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/favicon.ico", no_icon),
            Route("/state", snapshot),
            WebSocketRoute("/ws", stream),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    if token is not None:
        app.add_middleware(TokenGate, token=token)
    return app


class TokenGate:
    """ASGI middleware: every HTTP request and WebSocket needs the token (query or cookie)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        given = connection.query_params.get("token") or connection.cookies.get(COOKIE) or ""
        if secrets.compare_digest(given.encode(), self.token.encode()):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "token required"})
        else:
            text = "this dashboard needs its token: open the address with ?token=TOKEN\n"
            await PlainTextResponse(text, status_code=401)(scope, receive, send)


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == websocket.headers.get("host")


class DashboardServer:
    """uvicorn serving :func:`create_app` in a daemon thread; a context manager.

    :meth:`start` binds the socket first (so a busy port is an OSError here, at once) and
    returns when the server accepts connections; :meth:`stop` shuts it down.
    """

    def __init__(self, state: WebState, options: WebOptions, refresh_s: float = 1.0) -> None:
        self.state, self.options, self.refresh_s = state, options, refresh_s
        self.port = options.port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.options.url(self.port)

    def start(self, timeout_s: float = 10.0) -> str:
        """Serve; returns the page's address. OSError when the address cannot be bound."""
        import uvicorn

        family = socket.AF_INET6 if ":" in self.options.host else socket.AF_INET
        sock = socket.create_server((self.options.host, self.options.port), family=family)
        self.port = sock.getsockname()[1]
        app = create_app(self.state, self.options.token, self.refresh_s)
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", ws_ping_interval=None)  # fmt: skip
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="spargo-web",
            daemon=True,
        )
        self._thread.start()
        waited = 0.0
        while not server.started and self._thread.is_alive() and waited < timeout_s:
            self._thread.join(0.02)
            waited += 0.02
        if not server.started:
            self.stop()
            raise OSError(f"the dashboard did not start on {self.options.host}:{self.port}")
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
