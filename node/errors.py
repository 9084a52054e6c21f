"""Exceptions raised by the peer and its transports.

    NodeError
    ├── ConfigError            a bad config file or flag (one line tells what to fix)
    ├── CheckpointError        a checkpoint that is missing pieces or fails its checksum
    └── TransportError         anything a transport cannot do
        ├── TransportClosed    the transport was closed (by us or the other side)
        ├── UnknownPeer        no route to that peer id
        ├── MessageTooLarge    the payload exceeds the transport's limit
        └── ConnectError       the broker or peer could not be reached / refused us
            └── DuplicatePeer  another live process already uses this peer id

Third-party errors (aiomqtt, OSError, ssl) are translated into these at the adapter that sees
them, so the rest of the node handles one family.
"""

from __future__ import annotations


class NodeError(Exception):
    """Root of every exception raised by the ``node`` package."""


class ConfigError(NodeError, ValueError):
    """A bad configuration value; the message says what is wrong and how to fix it."""


class CheckpointError(NodeError):
    """A checkpoint could not be written or is corrupt."""


class TransportError(NodeError):
    """A transport failed to deliver or receive."""


class TransportClosed(TransportError):
    """The transport is closed."""


class UnknownPeer(TransportError):
    """The transport has no route to the named peer."""


class MessageTooLarge(TransportError):
    """The payload is larger than the transport accepts."""


class ConnectError(TransportError):
    """Could not connect, or the other side refused us (auth, TLS, ACL)."""


class DuplicatePeer(ConnectError):
    """Another live process holds this peer id on the swarm (the message names the id)."""
