"""The transport seam: a tiny async interface that moves opaque bytes between peer ids.

A transport knows nothing about messages, models or gossip policy; it is handed bytes that
``protocol`` produced and hands back bytes for ``protocol`` to check. Every implementation
(in-memory, MQTT, TCP) passes the same conformance suite in ``tests/node/conformance.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol, Self, runtime_checkable


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
