"""Direct peer-to-peer transport over asyncio TCP streams (optionally TLS); no broker.

Every peer listens on ``config.host:config.port``. To send to a peer, a peer opens one
outbound connection to it (looked up in the address book), exchanges HELLO frames (each side
names its peer id and listen address, so the receiver's address book learns the sender's
address and the sender checks it reached the peer it meant) and then writes length-prefixed
DATA frames (see ``tcp_wire``). One connection carries one direction of one link, so per-link
order is TCP's order. A lost connection is re-opened on the next send; after a failed attempt
the link waits a jittered, exponentially growing backoff before the next one, and sends in
that window fail fast with ``ConnectError``.

With ``hello_keys`` set, every HELLO carries an HMAC-SHA256 tag under a swarm key, bound to
the receiver's id, a timestamp and a nonce (scheme in ``hello_auth``): a peer neither learns an
address from, nor accepts data over, a connection whose HELLO fails that check; it closes it
and counts a ``hello_unauthenticated`` drop. Without keys HELLOs are unauthenticated claims.

Received messages wait in a bounded queue; when it is full the connection handlers stop
reading, so TCP flow control slows the senders instead of memory growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from spargo.node.errors import ConfigError, ConnectError, TransportError, UnknownPeer
from spargo.node.transports.base import NetworkTransport, client_tls_context
from spargo.node.transports.hello_auth import HelloAuthenticator, HelloRejected, parse_hello_keys
from spargo.node.transports.registry import config_from_table
from spargo.node.transports.tcp_wire import (
    MAX_HELLO_BYTES,
    FrameKind,
    Hello,
    decode_hello,
    encode_hello,
    frame_header,
    parse_address,
    read_frame,
)
from spargo.node.transports.wire import (
    FrameError,
    backoff_delay_s,
    check_backoff,
    check_own_peer_id,
)

_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class TcpConfig:
    """Listen address, address book, TLS files, timeouts and limits of a TCP transport."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, see TcpTransport.listen_address
    advertise: str | None = None  # "host:port" announced in HELLO; None: the bound address
    peers: Mapping[str, str] = field(default_factory=dict)  # peer_id -> "host:port"
    tls_cert: Path | None = None  # our certificate (server side, and client side for mTLS)
    tls_key: Path | None = None
    tls_ca: Path | None = None  # CA that signs the peers' certificates; set => TLS is on
    tls_require_client_cert: bool = False
    tls_check_hostname: bool = True
    connect_timeout_s: float = 5.0
    handshake_timeout_s: float = 5.0
    send_timeout_s: float = 30.0
    backoff_min_s: float = 0.05
    backoff_max_s: float = 5.0
    max_message_bytes: int = 64 * 1024 * 1024
    incoming_queue_size: int = 1024
    seed: int | None = None  # backoff jitter; None: fresh entropy
    # Swarm keys that authenticate HELLOs ({key id: hex, >= 16 bytes}); empty: HELLOs are bare.
    hello_keys: Mapping[int, str] = field(default_factory=dict, repr=False)
    hello_key_id: int = 0  # the key our HELLOs are tagged with
    hello_max_skew_s: float = 60.0  # accepted clock difference between peers

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535 (0 picks a free port)")
        for peer_id, address in self.peers.items():
            check_own_peer_id(peer_id)
            parse_address(address)
        if self.advertise is not None:
            parse_address(self.advertise)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("TLS (tls_ca) needs this peer's tls_cert and tls_key to listen")
        check_backoff(self.backoff_min_s, self.backoff_max_s)
        if self.max_message_bytes <= 0 or self.incoming_queue_size <= 0:
            raise ValueError("max_message_bytes and incoming_queue_size must be positive")
        if min(self.connect_timeout_s, self.handshake_timeout_s, self.send_timeout_s) <= 0:
            raise ValueError("timeouts must be positive (seconds)")
        parse_hello_keys(self.hello_keys, self.hello_key_id)
        if not self.hello_max_skew_s > 0:
            raise ValueError(f"hello_max_skew_s must be positive, got {self.hello_max_skew_s!r}")

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None

    def server_ssl(self) -> ssl.SSLContext | None:
        """The listening side's TLS context, or None for plaintext."""
        if not self.tls or self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.tls_ca)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        context.verify_mode = (
            ssl.CERT_REQUIRED if self.tls_require_client_cert else ssl.CERT_OPTIONAL
        )
        return context

    def client_ssl(self) -> ssl.SSLContext | None:
        """The connecting side's TLS context (presents our cert for mutual TLS)."""
        if not self.tls:
            return None
        return client_tls_context(self.tls_ca, self.tls_cert, self.tls_key, self.tls_check_hostname)

    def hello_authenticator(self) -> HelloAuthenticator | None:
        """The HELLO signer/checker for these keys, or None when HELLOs are unauthenticated."""
        keys = parse_hello_keys(self.hello_keys, self.hello_key_id)
        if not keys:
            return None
        return HelloAuthenticator(keys, self.hello_key_id, self.hello_max_skew_s)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], swarm: str) -> Self:
        """From a ``[transport]`` table: TOML keys are strings, so ``hello_keys`` ``{"1": hex}``
        becomes ``{1: hex}``. TCP peers need no swarm name (the address book is the swarm)."""
        values = dict(table)
        if "hello_keys" in values:
            try:
                values["hello_keys"] = {int(k): v for k, v in values["hello_keys"].items()}
            except (AttributeError, TypeError, ValueError):
                raise ConfigError(
                    '[transport] hello_keys must be a table of key_id = "hex"'
                ) from None
        return config_from_table(cls, values)


@dataclass
class _Link:
    """Our outbound connection to one peer, and its backoff state."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writer: asyncio.StreamWriter | None = None
    watcher: asyncio.Task[None] | None = None
    failures: int = 0
    retry_at: float = 0.0


class TcpTransport(NetworkTransport):
    """Direct TCP transport of one peer (see module docstring)."""

    def __init__(self, config: TcpConfig, peer_id: str) -> None:
        super().__init__(peer_id, config.max_message_bytes, config.incoming_queue_size)
        self.config = config
        self._configured = dict(config.peers)
        self._learned: dict[str, str] = {}
        self._links: dict[str, _Link] = {}
        self._connection_numbers = itertools.count()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._listen: str | None = None
        self._rng = random.Random(config.seed)
        self._server_ssl = config.server_ssl()
        self._client_ssl = config.client_ssl()
        self._auth = config.hello_authenticator()

    # -- lifecycle -------------------------------------------------------------------------

    async def _open(self) -> None:
        """Start listening; ConnectError if the address cannot be bound."""
        try:
            self._server = await asyncio.start_server(
                self._accepted, self.config.host, self.config.port, ssl=self._server_ssl
            )
        except OSError as exc:
            raise ConnectError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}"
            ) from exc
        host, port = self._server.sockets[0].getsockname()[:2]
        self._listen = self.config.advertise or f"{host}:{port}"

    @property
    def listen_address(self) -> str:
        """``host:port`` this peer listens on (and announces); only after start()."""
        if self._listen is None:
            raise TransportError("the transport has not been started: no listen address yet")
        return self._listen

    def address_book(self) -> dict[str, str]:
        """Known peers: configured addresses, overlaid with those learned from HELLOs."""
        return {**self._learned, **self._configured}

    def add_peer(self, peer_id: str, address: str) -> None:
        """Add or replace an address-book entry (``address`` is ``host:port``)."""
        check_own_peer_id(peer_id)
        parse_address(address)
        self._configured[peer_id] = address

    async def _close(self) -> None:
        """Stop listening, close every connection and wait for the handlers to end."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self.tasks.aclose()  # the connection handlers, before the server waits on them
        if self._server is not None:
            with contextlib.suppress(OSError, RuntimeError):
                await self._server.wait_closed()

    # -- sending ---------------------------------------------------------------------------

    def _address_of(self, peer_id: str) -> str:
        address = self._configured.get(peer_id) or self._learned.get(peer_id)
        if address is None:
            raise UnknownPeer(f"no address for peer {peer_id!r}: add it to the address book")
        return address

    async def send(self, peer_id: str, data: bytes) -> None:
        """Send ``data`` to ``peer_id`` over our connection to it (opened on demand)."""
        self._check_outgoing(peer_id, data)
        if peer_id == self.peer_id:
            await self._deliver(peer_id, bytes(data))
            return
        address = self._address_of(peer_id)
        link = self._links.setdefault(peer_id, _Link())
        async with link.lock:
            self._check_open()
            fresh = link.writer is None
            writer = await self._connected(peer_id, address, link)
            try:
                await self._write(writer, data)
            except (OSError, TimeoutError) as exc:
                self._drop(link)
                self._check_open()
                if fresh:
                    raise TransportError(f"sending to {peer_id!r} failed: {exc}") from exc
                # A connection that died while idle: reconnect once and resend.
                writer = await self._connected(peer_id, address, link)
                try:
                    await self._write(writer, data)
                except (OSError, TimeoutError) as exc2:
                    self._drop(link)
                    self._check_open()
                    raise TransportError(f"sending to {peer_id!r} failed: {exc2}") from exc2
        self._sent(data)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.is_closing():
            raise ConnectionResetError("connection closed")
        writer.write(frame_header(FrameKind.DATA, len(data)))
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.config.send_timeout_s)

    def _drop(self, link: _Link) -> None:
        if link.writer is not None:
            self._writers.discard(link.writer)
            link.writer.close()
            link.writer = None
        if link.watcher is not None:
            link.watcher.cancel()
            link.watcher = None

    async def _connected(self, peer_id: str, address: str, link: _Link) -> asyncio.StreamWriter:
        if link.writer is not None and not link.writer.is_closing():
            return link.writer
        self._drop(link)
        loop = asyncio.get_running_loop()
        if loop.time() < link.retry_at:
            raise ConnectError(
                f"peer {peer_id!r} at {address} is unreachable ({link.failures} failed "
                f"attempts); next attempt in {link.retry_at - loop.time():.2f} s"
            )
        try:
            reader, writer = await self._handshake(peer_id, address)
        except (
            OSError,
            TimeoutError,
            FrameError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
        ) as exc:
            link.failures += 1
            self.stats.connect_failures += 1
            delay_s = backoff_delay_s(
                link.failures, self.config.backoff_min_s, self.config.backoff_max_s, self._rng
            )
            link.retry_at = loop.time() + delay_s
            raise ConnectError(f"cannot connect to peer {peer_id!r} at {address}: {exc}") from exc
        link.failures, link.retry_at = 0, 0.0
        link.writer = writer
        self._writers.add(writer)
        link.watcher = self.tasks.spawn(self._watch(link, reader, writer), f"watch-{peer_id}")
        self.stats.connects += 1
        return writer

    async def _handshake(
        self, peer_id: str, address: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = parse_address(address)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=self._client_ssl, server_hostname=host if self._client_ssl else None
            ),
            self.config.connect_timeout_s,
        )
        try:
            self._write_hello(writer, to=peer_id)
            kind, body = await asyncio.wait_for(
                read_frame(reader, MAX_HELLO_BYTES), self.config.handshake_timeout_s
            )
            if kind is not FrameKind.HELLO:
                raise FrameError("the peer did not answer with HELLO")
            their = decode_hello(body)
            self._check_hello(their)
            if their.peer_id != peer_id:
                raise FrameError(f"{address} is peer {their.peer_id!r}, not {peer_id!r}")
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _watch(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The receiver never writes after its HELLO: any read returning means the link died.
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.read(1)
        if link.writer is writer:
            link.watcher = None  # we are that task; _drop must not cancel us mid-exit
            self._drop(link)

    # -- receiving -------------------------------------------------------------------------

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The server's callback: serve the connection as a task of our group."""
        if self._closed or not self.tasks.running:
            writer.close()
            return
        self._writers.add(writer)
        self.tasks.spawn(self._serve(reader, writer), f"serve-{next(self._connection_numbers)}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sender = await self._accept_hello(reader, writer)
            while True:
                kind, body = await read_frame(reader, self.max_message_bytes)
                if kind is not FrameKind.DATA:
                    self.stats.drop("unexpected_frame")
                    continue
                self._received(sender, body)
                await self._deliver(sender, body)
        except HelloRejected:
            pass  # counted by _check_hello
        except FrameError:
            self.stats.drop("bad_frame")
        except TimeoutError:
            self.stats.drop("handshake_timeout")
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the other side went away; it reconnects when it has something to send
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _accept_hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str:
        kind, body = await asyncio.wait_for(
            read_frame(reader, MAX_HELLO_BYTES), self.config.handshake_timeout_s
        )
        if kind is not FrameKind.HELLO:
            raise FrameError("the first frame was not HELLO")
        hello = decode_hello(body)
        self._check_hello(hello)  # before learning anything from it
        if hello.listen is not None:
            self._learn(hello.peer_id, hello.listen, writer)
        self._write_hello(writer, to=hello.peer_id)
        await asyncio.wait_for(writer.drain(), self.config.handshake_timeout_s)
        return hello.peer_id

    def _write_hello(self, writer: asyncio.StreamWriter, to: str) -> None:
        auth = None if self._auth is None else self._auth.sign(self.peer_id, self._listen, to)
        hello = encode_hello(self.peer_id, self._listen, auth)
        writer.write(frame_header(FrameKind.HELLO, len(hello)) + hello)

    def _check_hello(self, hello: Hello) -> None:
        """With keys: HelloRejected (counted) unless the HELLO is tagged for us."""
        if self._auth is None:
            return
        try:
            self._auth.verify(hello.peer_id, hello.listen, hello.auth, self.peer_id)
        except HelloRejected:
            self.stats.drop("hello_unauthenticated")
            raise

    def _learn(self, sender: str, listen: str, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = parse_address(listen)
        except ValueError:
            self.stats.drop("bad_listen_address")
            return
        if host in _UNSPECIFIED_HOSTS:
            # The sender listens on every interface: reach it at the address it came from.
            peername = writer.get_extra_info("peername")
            if not peername:
                return
            host = str(peername[0])
        self._learned[sender] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
