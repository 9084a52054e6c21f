"""The transport seam: a tiny async interface that moves opaque bytes between peer ids.

A transport knows nothing about messages, models or gossip policy; it is handed bytes that
``protocol`` produced and hands back bytes for ``protocol`` to check. Every implementation
(in-memory, MQTT, TCP) passes the same conformance suite in ``tests/node/conformance.py``.

Optional powers are declared capabilities, checked with ``isinstance`` (never ``getattr``):

- :class:`Membership`: knows which peers are online now (MQTT's retained presence);
- :class:`AddressBook`: a table ``peer_id -> host:port`` that grows as peers say hello (TCP);
- :class:`StatusPublisher`: publishes a status record for ``spargo monitor`` (MQTT);
- :class:`Reachability`: can tell whether a peer is reachable before sending (TCP);
- :class:`DropReporter`: reports the data it dropped itself, by reason (every network one).

:class:`TransportBase` holds the open/closed state every transport shares;
:class:`NetworkTransport` adds what the real-network transports share: the checked peer id,
the bounded incoming queue, :class:`TransportStats`, the TLS client context and the
:class:`BackgroundTasks` group their named background tasks run in.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from spargo.node.errors import MessageTooLarge, TransportClosed, TransportError, UnknownPeer
from spargo.node.transports.wire import check_own_peer_id, peer_id_problem

LOG = logging.getLogger(__name__)


@runtime_checkable
class Transport(Protocol):
    """Moves whole messages (bytes) between peers.

    - ``send`` delivers to one peer or raises a ``TransportError`` subclass
      (``UnknownPeer``, ``MessageTooLarge``, ``TransportClosed``); delivery per link is in order.
    - ``incoming`` yields ``(sender_peer_id, data)``; it ends when the transport closes.
    - ``aclose`` is idempotent; after it ``send`` raises ``TransportClosed``.
    """

    peer_id: str
    max_message_bytes: int

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def send(self, peer_id: str, data: bytes) -> None: ...

    def incoming(self) -> AsyncIterator[tuple[str, bytes]]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Membership(Protocol):
    """A transport that knows who is in the swarm right now."""

    def online_peers(self) -> set[str]:
        """Peers currently online (this peer included)."""
        ...


@runtime_checkable
class AddressBook(Protocol):
    """A transport that reaches peers through a table of addresses."""

    def address_book(self) -> dict[str, str]:
        """Known peers: ``peer_id -> "host:port"``."""
        ...

    def add_peer(self, peer_id: str, address: str) -> None:
        """Add or replace one entry."""
        ...


@runtime_checkable
class StatusPublisher(Protocol):
    """A transport that can publish this peer's status for ``spargo monitor``."""

    async def publish_status(self, status: Mapping[str, object]) -> None:
        """Publish ``status`` (JSON-ready) where monitors read it; TransportError if not."""
        ...


@runtime_checkable
class Reachability(Protocol):
    """A transport that can tell whether a peer is reachable now (TCP: connect and HELLO)."""

    async def reach(self, peer_id: str) -> bool:
        """Whether a connection to ``peer_id`` is open (opening one if needed); never raises."""
        ...


@runtime_checkable
class DropReporter(Protocol):
    """A transport that drops data itself (bad envelopes, oversized chunks, a full queue)
    and reports how much, by reason, so the node's metrics and status include it."""

    def drop_counts(self) -> Mapping[str, int]:
        """Running totals of data dropped inside the transport, by reason."""
        ...


class TransportBase(abc.ABC):
    """Open/closed state and ``async with``: it starts the transport and closes it on exit.

    Subclasses implement ``start`` (connect, bind, subscribe; a no-op by default) and
    ``aclose``, which calls :meth:`_mark_closed` first.
    """

    peer_id: str
    max_message_bytes: int
    _closed = False  # a class default, so wrappers that skip __init__ still have it

    @property
    def closed(self) -> bool:
        """Whether ``aclose`` has been called."""
        return self._closed

    def _check_open(self) -> None:
        """TransportClosed once the transport has been closed."""
        if self._closed:
            raise TransportClosed(f"transport of {self.peer_id!r} is closed")

    def _mark_closed(self) -> bool:
        """Mark closed; False when it already was (``aclose`` is idempotent)."""
        if self._closed:
            return False
        self._closed = True
        return True

    async def start(self) -> None:  # noqa: B027 - optional hook, a no-op for most transports
        """Connect or bind; called by ``__aenter__``."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close; idempotent."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class BackgroundTasks:
    """Named background tasks of one owner, run in one ``asyncio.TaskGroup``.

    A TaskGroup must be entered and left by one task, while a transport is opened and closed
    by whichever tasks its user runs; so a supervisor task holds the group open from
    :meth:`start` until :meth:`aclose` cancels it (and with it every task in the group). A
    task that raises is logged once, at this boundary, and does not cancel its siblings.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._group: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._group is not None

    async def start(self) -> None:
        """Open the group (idempotent)."""
        if self._supervisor is not None:
            return
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(ready), name=f"{self.owner}-tasks")
        await ready

    async def _supervise(self, ready: asyncio.Future[None]) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            ready.set_result(None)
            await asyncio.get_running_loop().create_future()  # until aclose cancels us

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as the task ``<owner>-<name>`` in the group; RuntimeError if closed."""
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.owner}: background tasks are not running")
        task = self._group.create_task(self._guard(coro, name), name=f"{self.owner}-{name}")
        # Cancelled before it ever ran: close the coroutine, or Python warns it was not awaited.
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guard(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except Exception:  # a task boundary: log, keep the siblings running
            LOG.exception("%s: background task %s failed", self.owner, name)

    async def aclose(self) -> None:
        """Cancel every task in the group and wait for them (idempotent)."""
        supervisor, self._supervisor, self._group = self._supervisor, None, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)


@dataclass
class TransportStats:
    """Counters a real-network transport keeps; ``drops`` counts received data discarded."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    connects: int = 0
    connect_failures: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "messages_sent": self.messages_sent,
            "bytes_sent": self.bytes_sent,
            "messages_received": self.messages_received,
            "bytes_received": self.bytes_received,
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "drops": dict(self.drops),
        }


def client_tls_context(
    ca: Path | None, cert: Path | None, key: Path | None, check_hostname: bool
) -> ssl.SSLContext:
    """The TLS context of a connecting side: trusts ``ca``, presents ``cert`` when given."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = check_hostname
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


class NetworkTransport(TransportBase):
    """What the MQTT and TCP transports share (see the module docstring).

    Subclasses implement ``_open`` (connect or bind; runs once the background group is up)
    and ``_close`` (say goodbye, drop connections); the base then cancels the background
    tasks and ends ``incoming()``.
    """

    def __init__(self, peer_id: str, max_message_bytes: int, incoming_queue_size: int) -> None:
        self.peer_id = check_own_peer_id(peer_id)
        self.max_message_bytes = max_message_bytes
        self.stats = TransportStats()
        self.tasks = BackgroundTasks(f"{type(self).__name__.lower()}-{peer_id}")
        # None marks the end of the stream.
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(incoming_queue_size)
        self._started = False
        self._failure: TransportError | None = None

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect, bind or subscribe (ConnectError on failure)."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Stop talking to the network; the background tasks are cancelled afterwards."""

    async def start(self) -> None:
        """Start the background group, then ``_open``; ConnectError leaves nothing running."""
        self._check_open()
        if self._started:
            return
        await self.tasks.start()
        try:
            await self._open()
        except BaseException:
            await self.tasks.aclose()
            raise
        self._started = True

    async def aclose(self) -> None:
        """Close the connections, cancel the background tasks, end ``incoming()``."""
        if not self._mark_closed():
            return
        try:
            await self._close()
        finally:
            await self.tasks.aclose()
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    def drop_counts(self) -> Mapping[str, int]:
        """Data this transport dropped, by reason (the ``DropReporter`` capability)."""
        return dict(self.stats.drops)

    def _fail(self, error: TransportError) -> None:
        """Stop for good with ``error``: ``incoming()`` raises it once drained, so the peer
        ends with that one line (a duplicate peer id, say) instead of flapping on."""
        if self._failure is None:
            self._failure = error
            LOG.error("%s", error)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    @property
    def failure(self) -> TransportError | None:
        """The error that stopped this transport for good, if any."""
        return self._failure

    def _check_outgoing(self, peer_id: str, data: bytes) -> None:
        """TransportClosed, UnknownPeer (a malformed id) or MessageTooLarge, else nothing."""
        if self._failure is not None:
            raise self._failure
        self._check_open()
        problem = peer_id_problem(peer_id)
        if problem is not None:
            raise UnknownPeer(problem)
        if len(data) > self.max_message_bytes:
            raise MessageTooLarge(
                f"{len(data)} bytes exceeds this transport's limit of {self.max_message_bytes}"
            )

    def _received(self, sender: str, data: bytes) -> None:
        """Count one whole message received (before it is queued)."""
        self.stats.messages_received += 1
        self.stats.bytes_received += len(data)

    def _sent(self, data: bytes) -> None:
        """Count one whole message sent."""
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)

    def _queue_full(self) -> bool:
        return self._queue.full()

    def _offer(self, sender: str, data: bytes) -> None:
        """Queue a message without waiting (the caller checked ``_queue_full``)."""
        self._queue.put_nowait((sender, data))

    async def _deliver(self, sender: str, data: bytes) -> None:
        """Queue a message, waiting while the queue is full (TCP flow control)."""
        await self._queue.put((sender, data))

    async def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        """``(sender, data)`` for every whole message; ends when the transport closes, or
        raises the error that stopped it (see ``_fail``)."""
        while True:
            if self._closed and self._queue.empty():
                break
            item = await self._queue.get()
            if item is None:
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(None)  # wake any other iterator too
                break
            yield item
        if self._failure is not None:
            raise self._failure
