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
from dataclasses import dataclass, field

from spargo.node.errors import ConnectError, TransportError, UnknownPeer
from spargo.node.transports.base import NetworkTransport
from spargo.node.transports.hello_auth import HelloRejected
from spargo.node.transports.tcp_config import TcpConfig
from spargo.node.transports.tcp_wire import (
    MAX_HELLO_BYTES,
    FrameKind,
    Hello,
    decode_hello,
    encode_hello,
    frame_header,
    parse_address,
    read_frame,
    read_frame_timed,
)
from spargo.node.transports.wire import (
    FrameError,
    backoff_delay_s,
    check_own_peer_id,
)

_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::"})


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
        self._inbound = 0  # connections being served (each holds a file descriptor)
        self._handshaking = 0  # of those, still before an accepted HELLO

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

    async def reach(self, peer_id: str) -> bool:
        """Whether our link to ``peer_id`` is up, opening it (HELLO both ways) if needed;
        False for an unknown, unreachable or backing-off peer (the ``Reachability``
        capability: start-up waits for neighbours with it)."""
        if peer_id == self.peer_id:
            return True
        try:
            address = self._address_of(peer_id)
            link = self._links.setdefault(peer_id, _Link())
            async with link.lock:
                self._check_open()
                await self._connected(peer_id, address, link)
        except TransportError:
            return False
        return True

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
        """The server's callback: serve the connection as a task of our group, unless that
        would pass the caps on inbound (and on still-handshaking) connections: then it is
        closed at once and counted, so no outsider can exhaust our file descriptors."""
        if self._closed or not self.tasks.running:
            writer.close()
            return
        cfg = self.config
        if self._inbound >= cfg.max_inbound_connections:
            self.stats.drop("connection_limit")
            writer.close()
            return
        if self._handshaking >= cfg.max_handshaking_connections:
            self.stats.drop("handshake_limit")
            writer.close()
            return
        self._writers.add(writer)
        self._inbound += 1
        self._handshaking += 1
        self.tasks.spawn(self._serve(reader, writer), f"serve-{next(self._connection_numbers)}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handshaking = True
        try:
            sender = await self._accept_hello(reader, writer)
            handshaking = False
            self._handshaking -= 1
            await self._read_data(sender, reader)
        except HelloRejected:
            pass  # counted by _check_hello
        except FrameError:
            self.stats.drop("bad_frame")
        except TimeoutError:
            self.stats.drop("handshake_timeout" if handshaking else "read_timeout")
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the other side went away; it reconnects when it has something to send
        finally:
            self._inbound -= 1
            if handshaking:
                self._handshaking -= 1
            self._writers.discard(writer)
            writer.close()

    async def _read_data(self, sender: str, reader: asyncio.StreamReader) -> None:
        """DATA frames until the connection ends, idles past ``idle_timeout_s`` or stalls
        inside a frame past ``read_timeout_s`` (TimeoutError)."""
        cfg = self.config
        while True:
            kind, body = await read_frame_timed(
                reader, self.max_message_bytes, cfg.idle_timeout_s, cfg.read_timeout_s
            )
            if kind is not FrameKind.DATA:
                self.stats.drop("unexpected_frame")
                continue
            self._received(sender, body)
            await self._deliver(sender, body)

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
