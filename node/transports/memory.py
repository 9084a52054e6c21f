"""In-memory transport: peers in one process exchanging bytes through a shared hub.

The hub is what the simulator drives: a ``LinkPolicy`` decides, per message, whether it is
dropped and how long it takes (latency, bandwidth, partitions). Delays use the event loop's
clock only, so on a virtual clock a seeded run replays exactly.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

from spargo.node.errors import MessageTooLarge, UnknownPeer
from spargo.node.transports.base import TransportBase

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

#: ``policy(sender, receiver, nbytes) -> delay_s`` or ``None`` to drop the message.
LinkPolicy = Callable[[str, str, int], float | None]

_CLOSED = object()


@dataclass
class LinkStats:
    """Counters kept by the hub (what the simulator reports as network totals)."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_dropped: int = 0
    messages_delivered: int = 0


@dataclass
class MemoryNetwork:
    """A hub that routes bytes between in-memory transports.

    Messages on one link are delivered in the order sent, even when the policy gives a later
    message a shorter delay (a link is a FIFO pipe, as TCP and MQTT QoS 1 are).
    """

    policy: LinkPolicy | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    stats: LinkStats = field(default_factory=LinkStats)
    _inboxes: dict[str, asyncio.Queue[object]] = field(default_factory=dict)
    _link_free_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _pending: set[asyncio.TimerHandle] = field(default_factory=set)
    _in_flight: dict[tuple[str, str], deque[tuple[float, bytes]]] = field(default_factory=dict)

    def transport(self, peer_id: str) -> MemoryTransport:
        """Register ``peer_id`` (replacing a closed registration) and return its transport."""
        if peer_id in self._inboxes:
            raise ValueError(f"peer id {peer_id!r} is already attached; close its transport first")
        inbox: asyncio.Queue[object] = asyncio.Queue()
        self._inboxes[peer_id] = inbox
        return MemoryTransport(self, peer_id, inbox)

    def is_attached(self, peer_id: str) -> bool:
        return peer_id in self._inboxes

    def detach(self, peer_id: str, inbox: asyncio.Queue[object] | None = None) -> None:
        """Take ``peer_id`` off the network (only if ``inbox`` is still its registration).

        A peer that crashed and rejoined has a new registration under the same id; the old
        transport closing late must not take the new one down with it.
        """
        current = self._inboxes.get(peer_id)
        if current is None or (inbox is not None and current is not inbox):
            return
        del self._inboxes[peer_id]
        current.put_nowait(_CLOSED)

    def route(self, sender: str, receiver: str, data: bytes) -> None:
        if receiver not in self._inboxes and self.policy is None:
            raise UnknownPeer(f"no peer {receiver!r} on this network")
        if len(data) > self.max_message_bytes:
            raise MessageTooLarge(
                f"{len(data)} bytes exceeds the in-memory limit of {self.max_message_bytes}"
            )
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)
        delay_s = 0.0 if self.policy is None else self.policy(sender, receiver, len(data))
        if delay_s is None:
            self.stats.messages_dropped += 1
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        # FIFO per link: never overtake the previous message on the same link.
        at = max(now + delay_s, self._link_free_at.get((sender, receiver), now))
        self._link_free_at[(sender, receiver)] = at
        queue = self._in_flight.setdefault((sender, receiver), deque())
        queue.append((at, data))
        if at <= now and len(queue) == 1:
            self._flush(sender, receiver, now)
            return
        handle: asyncio.TimerHandle
        handle = loop.call_at(at, lambda: self._timer_fired(handle, sender, receiver))
        self._pending.add(handle)

    def _timer_fired(self, handle: asyncio.TimerHandle, sender: str, receiver: str) -> None:
        self._pending.discard(handle)
        self._flush(sender, receiver, asyncio.get_running_loop().time())

    def _flush(self, sender: str, receiver: str, now: float) -> None:
        # Timers with equal deadlines may fire in any order; delivering from the head of the
        # link's queue keeps the link FIFO whatever order they fire in.
        queue = self._in_flight[(sender, receiver)]
        while queue and queue[0][0] <= now:
            self._deliver(sender, receiver, queue.popleft()[1])

    def _deliver(self, sender: str, receiver: str, data: bytes) -> None:
        inbox = self._inboxes.get(receiver)
        if inbox is None:  # the receiver left while the message was in flight
            self.stats.messages_dropped += 1
            return
        self.stats.messages_delivered += 1
        inbox.put_nowait((sender, data))

    def cancel_pending(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        self._in_flight.clear()


class MemoryTransport(TransportBase):
    """One peer's end of a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, peer_id: str, inbox: asyncio.Queue[object]) -> None:
        self.peer_id = peer_id
        self.max_message_bytes = network.max_message_bytes
        self._network = network
        self._inbox = inbox

    async def send(self, peer_id: str, data: bytes) -> None:
        self._check_open()
        self._network.route(self.peer_id, peer_id, bytes(data))

    async def incoming(self) -> AsyncIterator[tuple[str, bytes]]:
        if self._closed:
            return
        while True:
            item = await self._inbox.get()
            if item is _CLOSED:
                return
            yield cast(tuple[str, bytes], item)

    async def aclose(self) -> None:
        if self._mark_closed():
            self._network.detach(self.peer_id, self._inbox)

    def detach(self) -> None:
        """Leave the network at once (a crash): nothing more is delivered to this peer."""
        self._network.detach(self.peer_id, self._inbox)
