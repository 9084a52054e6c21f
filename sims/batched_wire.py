"""Byte accounting for the batched engine: what the node engine's wire format would carry.

The batched engine sends no messages, but its byte and message counts must equal the node
engine's. Every count comes from encoding a real frame: a method payload
(``node.methods.payloads``) is mapped to its protocol message by the node's own seam
(``node.payload.to_message``) and framed by ``protocol.encode`` in an ``Envelope``, exactly as
``node.exchange`` does. A dense payload's size depends only on its kind, the model's shapes
and the msgpack size class of the envelope's integers (sequence number, round), so each
distinct size is encoded once and reused; payloads whose size depends on their values (masks,
positions) are encoded per peer (``Wire.encoded``). The node sends, per peer: a ``Hello`` to
every neighbour before round 0, each round's payload (one body, one sequence number, to every
target), and a ``Bye`` to every neighbour at the end; each distinct body takes the next
sequence number. The all-reduce reference charges one raw model upload (``sum(nbytes)``) per
peer and round (``sims.allreduce``). docs/algorithms.md §7.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spargo.node.methods import payloads as p
from spargo.node.payload import signature_hash, to_message
from spargo.protocol import Bye, Envelope, Hello, Message, encode

#: The swarm id the simulator's peers use (``sims.swarm.SWARM``).
SWARM = "sim"
#: The boot id every frame carries: each node draws a random uint64 (``identity.new_boot_id``),
#: which packs in 9 bytes but with odds 2⁻³² (below 2³²); this one packs as those do.
BOOT = 2**63
#: Message kinds whose size ``Wire.send`` finds from one encoded prototype.
KINDS = ("hello", "bye", "model", "share", "copy", "tau")


class Wire:
    """Running per-peer totals: ``bytes_sent[p]`` and ``messages_sent[p]``.

    ``signature``: the tensors peers exchange, as the node method's ``signature()`` (names,
    shapes, model order, SpaFL's threshold count); it fixes every dense message's layout.
    """

    def __init__(self, ids: Sequence[str], signature: p.Signature) -> None:
        self.ids = list(ids)
        self.signature = signature
        n = len(self.ids)
        self.seq = np.zeros(n, dtype=np.int64)
        self.bytes_sent = np.zeros(n, dtype=np.int64)
        self.messages_sent = np.zeros(n, dtype=np.int64)
        self._sizes: dict[tuple[str, int, int], int] = {}

    def _prototype(self, kind: str, round_index: int) -> Message:
        """A message of ``kind`` whose encoded size is that of every message of its kind."""
        if kind == "hello":
            return Hello(model_signature=signature_hash(self.signature))
        if kind == "bye":
            return Bye(reason="shutdown")
        if kind == "tau":
            return to_message(p.ThresholdVector(np.zeros(self.signature.thresholds, np.float32)))
        arrays = {n: np.zeros(s, dtype=np.float32) for n, s in self.signature.shapes.items()}
        if kind == "share":  # any mass > 0 packs as the same float64
            return to_message(p.PushShare(arrays, 0.5))
        if kind == "copy":  # a CHOCO stream starts with a copy; in lock-step rounds its
            return to_message(p.StreamCopy(round_index, arrays))  # number is the round's
        return to_message(p.Model(arrays))

    def _size(self, kind: str, seq: int, round_index: int) -> int:
        key = (kind, seq.bit_length(), round_index.bit_length())
        found = self._sizes.get(key)
        if found is None:
            body = self._prototype(kind, round_index)
            found = self._sizes[key] = len(
                encode(Envelope(SWARM, self.ids[0], seq, round_index, body, BOOT))
            )
        return found

    def send(self, kind: str, round_index: int, fanout: np.ndarray) -> np.ndarray:
        """Every peer p with ``fanout[p] > 0`` sends one new body (the next sequence number)
        to that many peers; returns each peer's message size in bytes [N] (0: sent none).

        ``kind``: ``hello``, ``model`` (``Model``), ``share`` (push-sum's ``PushShare``),
        ``copy`` (CHOCO's ``StreamCopy``), ``tau`` (SpaFL's ``ThresholdVector``) or ``bye``.
        """
        if kind not in KINDS:
            raise ValueError(f"message kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
        sending = np.flatnonzero(fanout > 0)
        self.seq[sending] += 1
        classes = _bits(self.seq[sending])
        sizes = np.zeros(len(self.ids), dtype=np.int64)
        for cls in np.unique(classes):
            chosen = sending[classes == cls]
            sizes[chosen] = self._size(kind, int(self.seq[chosen[0]]), round_index)
        self.bytes_sent += sizes * fanout
        self.messages_sent += fanout
        return sizes

    def encoded(self, peer: int, round_index: int, payload: p.Payload) -> int:
        """The encoded size of peer ``peer``'s next message carrying ``payload`` (sequence
        number ``seq[peer] + 1``), in bytes; count it with ``add``."""
        seq = int(self.seq[peer]) + 1
        body = to_message(payload)
        envelope = Envelope(SWARM, self.ids[peer], seq, round_index, body, BOOT)
        return len(encode(envelope))

    def add(self, sizes: np.ndarray, fanout: np.ndarray) -> np.ndarray:
        """Like ``send`` with each peer's message size already known (``encoded``);
        returns ``sizes``."""
        self.seq[fanout > 0] += 1
        self.bytes_sent += sizes * fanout
        self.messages_sent += fanout
        return sizes

    def upload(self, nbytes: int, who: np.ndarray | None = None) -> None:
        """All-reduce: every peer (``who`` [N] bool: those taking part) uploads its raw model
        once (charged, not encoded)."""
        taking = np.ones(len(self.ids), dtype=np.int64) if who is None else who.astype(np.int64)
        self.bytes_sent += nbytes * taking
        self.messages_sent += taking


def _bits(values: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of each non-negative int64 (the msgpack size class follows it)."""
    out = np.zeros(values.shape, dtype=np.int64)
    rest = values.astype(np.int64).copy()
    while (rest > 0).any():
        out += rest > 0
        rest >>= 1
    return out
