"""The transport seam: a tiny async interface that moves opaque bytes between peer ids.

A transport knows nothing about messages, models or gossip policy; it is handed bytes that
``protocol`` produced and hands back bytes for ``protocol`` to check. Every implementation
(in-memory, MQTT, TCP) passes the same conformance suite in ``tests/node/conformance.py``.
"""

from __future__ import annotations

import abc
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


class TransportBase(abc.ABC):
    """Shared plumbing: ``async with`` starts the transport and closes it on exit.

    Subclasses implement ``start`` (connect, bind, subscribe; a no-op by default) and
    ``aclose``.
    """

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
