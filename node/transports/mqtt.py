"""MQTT transport over a broker (Mosquitto 2): the only module of spargo that imports aiomqtt.

Topic layout (see docs/MQTT.md), all under ``spargo/<swarm>/``:

- ``inbox/<peer_id>/<sender>``: QoS 1; a peer subscribes to ``inbox/<its id>/+``. Each MQTT
  payload is one chunk of a message (``protocol.split``) wrapped in an envelope naming the
  sender (``mqtt_wire.pack_envelope``), which must match the topic's (a broker ACL
  ``write inbox/+/%u`` then stops a client sending under another peer's name).
- ``presence/<peer_id>``: retained JSON ``{"peer_id", "online", "updated_at"}``; "online" on
  connect, "offline" on a clean close and, as the last will, when the broker loses us.
- ``status/<peer_id>``: retained JSON status for ``spargo monitor`` (``publish_status``).

The session is persistent (clean_session false, client id ``spargo/<swarm>/<peer_id>``), so
QoS 1 messages sent while a peer is briefly offline wait in the broker until it returns. A lost
connection is re-established with jittered exponential backoff and the subscriptions renewed,
while the ``incoming()`` iterator keeps running (settings: ``mqtt_config``). aiomqtt/paho
errors become ``node.errors`` exceptions here and nowhere else (:func:`translate`, by
exception type and return code).

:func:`observe` is the read-only connection behind ``spargo monitor`` (``node.watch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from spargo.node.errors import ConnectError, DuplicatePeer, MessageTooLarge, TransportError
from spargo.node.metrics import strict_json
from spargo.node.transports.base import NetworkTransport
from spargo.node.transports.mqtt_config import MqttConfig
from spargo.node.transports.mqtt_observe import observe
from spargo.node.transports.mqtt_session import (
    MIN_CHUNK_BYTES,
    NODELAY,
    UNSUPPORTED_VERSION,
    accept_broker_puback_codes,
    hook_callbacks,
    session_options,
    translate,
)
from spargo.node.transports.mqtt_wire import (
    PACKET_TOO_LARGE,
    PresenceBook,
    Topics,
    json_object,
    pack_envelope,
    presence_payload,
    unpack_envelope,
)
from spargo.node.transports.wire import (
    FrameError,
    backoff_delay_s,
)
from spargo.protocol import Reassembler, RemoteProtocolError, split

LOG = logging.getLogger(__name__)


@dataclass
class _Connection:
    client: aiomqtt.Client
    lost: asyncio.Event = field(default_factory=asyncio.Event)


async def _disconnect(client: aiomqtt.Client, timeout_s: float) -> None:
    with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError, RuntimeError):
        await asyncio.wait_for(client.__aexit__(None, None, None), timeout_s)


class MqttTransport(NetworkTransport):
    """One peer's MQTT transport (see module docstring)."""

    def __init__(self, config: MqttConfig, peer_id: str) -> None:
        super().__init__(peer_id, config.max_message_bytes, config.incoming_queue_size)
        self.config = config
        self.topics = Topics(config.swarm)
        self._rng = random.Random(config.seed)
        self._next_message_id = self._rng.getrandbits(32)
        self._reassembler = Reassembler(
            # Room for two interleaved maximal messages (concurrent sends from one peer).
            max_bytes_in_flight_per_sender=2 * config.max_message_bytes + config.chunk_bytes,
            max_age_s=config.reassembly_max_age_s,
            max_message_bytes=config.max_message_bytes,
            max_messages_in_flight_per_sender=64,
            # Chunks arrive before authentication: bound what all claimed senders hold.
            max_bytes_in_flight_total=4 * config.max_message_bytes + config.chunk_bytes,
            # Senders not vouched for yet (no authenticated frame) share 16 chunks.
            max_stranger_bytes=16 * config.chunk_bytes,
        )
        self.boot = (
            f"{self._rng.getrandbits(64):016x}"
            if config.seed is not None
            else (secrets.token_hex(8))
        )
        self.started_at = time.time()  # wall clock: compared with other processes' starts
        self._presence = PresenceBook(peer_id, self.boot, self.started_at)
        self._version = (
            aiomqtt.ProtocolVersion.V5 if config.mqtt_version == 5 else aiomqtt.ProtocolVersion.V311
        )
        #: The largest MQTT payload we publish: chunk_bytes, lowered to what the broker
        #: announces (CONNACK Maximum Packet Size) or refuses (PUBACK 0x95).
        self.chunk_bytes = config.chunk_bytes
        self._refusals: list[int] = []
        accept_broker_puback_codes()  # PUBACK reason codes >= 0x80, in arrival order
        self._conn: _Connection | None = None
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def _open(self) -> None:
        """Connect (ConnectError if the broker is unreachable or refuses us) and subscribe."""
        conn = await self._connect()
        self._runner = self.tasks.spawn(self._run(conn), "reader")

    def _client(self) -> aiomqtt.Client:
        host, port, _ = self.config.endpoint()
        client = aiomqtt.Client(
            host,
            port,
            username=self.config.username,
            password=self.config.password,
            identifier=f"{self.topics.prefix}/{self.peer_id}",
            protocol=self._version,
            will=aiomqtt.Will(
                self.topics.presence(self.peer_id),
                presence_payload(self.peer_id, online=False, boot=self.boot),
                qos=1,
                retain=True,
            ),
            **session_options(self._version, self.config),
            timeout=self.config.connect_timeout_s,
            keepalive=self.config.keepalive_s,
            max_inflight_messages=self.config.max_inflight_messages,
            tls_context=self.config.ssl_context(),
            socket_options=NODELAY,  # paho does not set it: QoS 1 would wait ~40 ms a hop
        )
        client.pending_calls_threshold = 1 << 30  # chunked sends keep many publishes pending
        hook_callbacks(
            client,
            max_packet=lambda n: self._lower_chunks(n - 512, f"the broker's maximum packet {n}"),
            refused=self._refusals.append,
            taken_over=lambda: self._fail(
                self._duplicate("the broker handed our session to another client")
            ),
        )
        return client

    def _lower_chunks(self, limit: int, why: str) -> None:
        room = max(MIN_CHUNK_BYTES, limit)
        if room < self.chunk_bytes:
            LOG.warning("%s: chunks of %d bytes (%s)", self.peer_id, room, why)
            self.chunk_bytes = room

    def _duplicate(self, evidence: str) -> DuplicatePeer:
        return DuplicatePeer(
            f"peer id {self.peer_id!r} is already live on swarm {self.config.swarm!r} "
            f"({evidence}); give each process its own peer_id"
        )

    async def _connect(self) -> _Connection:
        client = self._client()
        what = f"connecting {self.peer_id!r} to {self.config.endpoint()[0]}"
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            if self._version is aiomqtt.ProtocolVersion.V5 and exc.rc in UNSUPPORTED_VERSION:
                LOG.info("%s: the broker speaks no MQTT 5; using 3.1.1", self.peer_id)
                self._version = aiomqtt.ProtocolVersion.V311
                return await self._connect()
            self.stats.connect_failures += 1
            raise translate(exc, what) from exc
        except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
            self.stats.connect_failures += 1
            raise translate(exc, what) from exc
        try:
            timeout_s = self.config.publish_timeout_s
            self._presence.connecting()
            await client.subscribe(self.topics.inbox(self.peer_id), qos=1, timeout=timeout_s)
            await client.subscribe(self.topics.presence(), qos=1, timeout=timeout_s)
            await client.publish(
                self.topics.presence(self.peer_id),
                presence_payload(
                    self.peer_id, online=True, boot=self.boot, started_at=self.started_at
                ),
                qos=1,
                retain=True,
                timeout=timeout_s,
            )
            self._presence.announced = True
        except aiomqtt.MqttError as exc:
            await _disconnect(client, 1.0)
            self.stats.connect_failures += 1
            raise translate(exc, f"{what}: subscribing") from exc
        self.stats.connects += 1
        conn = _Connection(client)
        self._conn = conn
        self._connected.set()
        return conn

    async def _run(self, conn: _Connection | None) -> None:
        """Read messages; when the connection drops, reconnect with backoff (until closed)."""
        while conn is not None:
            try:
                async for message in conn.client.messages:
                    self._dispatch(message.topic.value, message.payload, bool(message.retain))
                    if self._failure is not None:
                        break
            except aiomqtt.MqttError as exc:
                if self._failure is None:
                    LOG.warning("%s lost the broker connection: %s", self.peer_id, exc)
            self._connected.clear()
            self._conn = None
            conn.lost.set()
            await _disconnect(conn.client, 1.0)
            conn = None if self._failure is not None else await self._reconnect()

    async def _reconnect(self) -> _Connection | None:
        failures = 0
        while not self._closed:
            failures += 1
            cfg = self.config
            await asyncio.sleep(
                backoff_delay_s(failures, cfg.backoff_min_s, cfg.backoff_max_s, self._rng)
            )
            try:
                return await self._connect()
            except DuplicatePeer:
                return None  # _fail has ended incoming() with it
            except ConnectError as exc:
                LOG.info("%s: reconnect attempt %d failed: %s", self.peer_id, failures, exc)
        return None

    async def _close(self) -> None:
        """Announce offline, disconnect cleanly (the session stays)."""
        self._connected.set()  # wake senders waiting for a connection: they see the close
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None and self._failure is not None:
            conn.lost.set()  # the id is someone else's: leave their presence alone
            await _disconnect(conn.client, 2.0)
        elif conn is not None:
            conn.lost.set()
            with contextlib.suppress(aiomqtt.MqttError):
                await conn.client.publish(
                    self.topics.presence(self.peer_id),
                    presence_payload(self.peer_id, online=False, boot=self.boot),
                    qos=1,
                    retain=True,
                    timeout=min(1.0, self.config.publish_timeout_s),
                )
            await _disconnect(conn.client, 2.0)

    # -- receiving -------------------------------------------------------------------------

    def _dispatch(self, topic: str, payload: object, retained: bool = False) -> None:
        parsed = self.topics.split(topic)
        if parsed is None or not isinstance(payload, bytes | bytearray):
            self.stats.drop("foreign_topic")
            return
        kind, peer_id = parsed
        if kind == "inbox":
            self._on_chunk(bytes(payload), peer_id)
        elif kind == "presence":
            self._on_presence(peer_id, bytes(payload), retained)

    def _on_chunk(self, payload: bytes, topic_sender: str) -> None:
        try:
            sender, chunk = unpack_envelope(payload)
            if sender != topic_sender:  # the topic is what a broker ACL vouches for
                raise FrameError(f"envelope sender {sender!r} is not the topic's")
            message = self._reassembler.feed(sender, chunk, asyncio.get_running_loop().time())
        except FrameError:
            self.stats.drop("bad_envelope")
            return
        except RemoteProtocolError as exc:
            self.stats.drop(f"chunk_{exc.reason.value}")
            return
        if message is None:
            return
        if self._queue_full():
            self.stats.drop("queue_full")
            return
        self._received(sender, message)
        self._offer(sender, message)

    def _on_presence(self, peer_id: str, payload: bytes, retained: bool = False) -> None:
        presence = json_object(payload)
        if presence is None:
            self.stats.drop("bad_presence")
            return
        other = self._presence.update(peer_id, presence, retained)
        if other is not None:
            self._fail(self._duplicate(f"an older process, boot {other}, holds it"))

    def vouch(self, peer_id: str) -> None:
        """A frame from ``peer_id`` passed authentication: lift it out of the reassembler's
        small budget for unknown senders (``protocol.Reassembler.vouch``)."""
        self._reassembler.vouch(peer_id)

    @property
    def connected(self) -> bool:
        """Whether the transport holds a live broker connection right now."""
        return self._conn is not None and not self._closed

    def online_peers(self) -> set[str]:
        """Peers whose retained presence currently says online (ourselves included)."""
        return self._presence.online()

    # -- sending ---------------------------------------------------------------------------

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is None and not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.publish_timeout_s):  # cancel-safe on 3.11
                    await self._connected.wait()
            conn = self._conn
        self._check_open()
        if conn is None:
            raise ConnectError(
                f"{self.peer_id!r} is not connected to the broker "
                f"(waited {self.config.publish_timeout_s} s for a reconnect)"
            )
        return conn

    async def send(self, peer_id: str, data: bytes) -> None:
        """Publish ``data`` to ``peer_id``'s inbox, chunked; returns when the broker has it."""
        self._check_outgoing(peer_id, data)
        while True:
            conn = self._conn if self._conn is not None else await self._connection()
            # Chunks are wrapped in an envelope; keep each MQTT payload within chunk_bytes.
            room = self.chunk_bytes - len(pack_envelope(self.peer_id, b""))
            message_id, self._next_message_id = self._next_message_id, self._next_message_id + 1
            payloads = [pack_envelope(self.peer_id, c) for c in split(data, room, message_id)]
            try:
                await self._publish_all(conn, self.topics.inbox(peer_id, self.peer_id), payloads)
            except MessageTooLarge:
                if self.chunk_bytes <= MIN_CHUNK_BYTES:
                    raise
                self._lower_chunks(self.chunk_bytes // 2, "the broker refused a chunk as too large")
                continue  # resend the whole message in smaller chunks
            break
        self._sent(data)

    async def _publish_all(
        self, conn: _Connection, topic: str, payloads: list[bytes], retain: bool = False
    ) -> None:
        # The publishes start in list order (tasks run FIFO), which keeps per-link order;
        # racing them against the connection's loss stops a dead link from stalling us.
        timeout_s = self.config.publish_timeout_s
        publishes = asyncio.gather(
            *(
                conn.client.publish(topic, p, qos=1, retain=retain, timeout=timeout_s)
                for p in payloads
            )
        )
        lost = asyncio.ensure_future(conn.lost.wait())
        racing: set[asyncio.Future[Any]] = {publishes, lost}
        try:
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not publishes.done():
            publishes.cancel()
            await asyncio.gather(publishes, return_exceptions=True)
            self._check_open()
            raise TransportError(f"the broker connection was lost while sending to {topic}")
        try:
            publishes.result()
        except aiomqtt.MqttError as exc:
            self._check_open()
            raise TransportError(f"publishing to {topic} failed: {exc}") from exc
        self._raise_refusals(topic)

    def _raise_refusals(self, topic: str) -> None:
        """A PUBACK with a failure reason code (MQTT 5) is a send failure: counted by
        reason, logged (once per reason at warning level) and raised."""
        refusals = list(self._refusals)  # the paho hook holds this list's append: keep it
        self._refusals.clear()
        if not refusals:
            return
        code = refusals[0]
        reason = f"send_refused_0x{code:02x}"
        level = logging.DEBUG if reason in self.stats.drops else logging.WARNING
        for refused in refusals:
            self.stats.drop(f"send_refused_0x{refused:02x}")
        LOG.log(
            level,
            "%s: the broker refused a publish to %s (reason 0x%02x)",
            self.peer_id,
            topic,
            code,
        )
        if code == PACKET_TOO_LARGE:
            raise MessageTooLarge(f"the broker refused a chunk to {topic} as too large (0x95)")
        raise TransportError(f"the broker refused a publish to {topic} (reason 0x{code:02x})")

    async def publish_status(self, status: Mapping[str, object]) -> None:
        """Publish ``status`` as retained JSON on ``status/<peer_id>`` (for spargo monitor)."""
        self._check_open()
        conn = await self._connection()
        body = strict_json({"peer_id": self.peer_id, **status}, default=str).encode()
        await self._publish_all(conn, self.topics.status(self.peer_id), [body], retain=True)


__all__ = ["MqttConfig", "MqttTransport", "observe", "translate"]
