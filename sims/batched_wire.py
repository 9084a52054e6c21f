"""Byte accounting for the batched engine: what the node engine's wire format would carry.

The batched engine sends no messages, but its byte and message counts must equal the node
engine's. A message's encoded size depends only on its kind, the model's shapes and the msgpack
size class of its integer fields (sequence number, round, degree), so each distinct size is
found by encoding one real ``protocol.Envelope`` (``protocol.encode``) and reused. The node
sends, per peer: a ``Hello`` to every neighbour before round 0, each round's payload (one body,
one sequence number, to every target), and a ``Bye`` to every neighbour at the end; each
distinct body takes the next sequence number. The all-reduce reference charges one raw model
upload (``sum(nbytes)``) per peer and round (``sims.allreduce``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spargo.protocol import (
    Bye,
    Envelope,
    FullModel,
    Hello,
    NamedTensor,
    Thresholds,
    encode,
    model_signature,
)

#: The swarm id the simulator's peers use (``sims.swarm.SWARM``).
SWARM = "sim"


class Wire:
    """Running per-peer totals: ``bytes_sent[p]`` and ``messages_sent[p]``."""

    def __init__(
        self,
        ids: Sequence[str],
        names: Sequence[str],
        shapes: Sequence[tuple[int, ...]],
        method_name: str,
    ) -> None:
        self.ids = list(ids)
        self.names = list(names)
        self.shapes = list(shapes)
        self.method_name = method_name
        self.signature = model_signature(
            [(n, tuple(s), "float32") for n, s in zip(names, shapes, strict=True)]
        )
        n = len(self.ids)
        self.seq = np.zeros(n, dtype=np.int64)
        self.bytes_sent = np.zeros(n, dtype=np.int64)
        self.messages_sent = np.zeros(n, dtype=np.int64)
        self._sizes: dict[tuple[object, ...], int] = {}
        #: SpaFL: how many thresholds its ``Thresholds`` message carries.
        self.thresholds = 0

    def _size(self, kind: str, seq: int, round_index: int, extra: int = 0) -> int:
        key = (kind, seq.bit_length(), round_index.bit_length(), extra.bit_length())
        found = self._sizes.get(key)
        if found is None:
            body: Hello | FullModel | Bye | Thresholds
            if kind == "tau":
                body = Thresholds(values=np.zeros(self.thresholds, dtype=np.float32))
            elif kind == "hello":
                body = Hello(self.ids[0], SWARM, 1, self.signature, extra, (self.method_name,))
            elif kind == "bye":
                body = Bye(reason="shutdown")
            else:
                tensors = tuple(
                    NamedTensor(n, np.zeros(s, dtype=np.float32))
                    for n, s in zip(self.names, self.shapes, strict=True)
                )
                body = FullModel(tensors=tensors, weight=0.5 if kind == "share" else 1.0)
            envelope = Envelope(SWARM, self.ids[0], seq, round_index, body)
            found = self._sizes[key] = len(encode(envelope))
        return found

    def send(
        self, kind: str, round_index: int, fanout: np.ndarray, extra: np.ndarray | None = None
    ) -> np.ndarray:
        """Every peer p with ``fanout[p] > 0`` sends one new body (the next sequence number)
        to that many peers; returns each peer's message size in bytes [N] (0: sent none).

        ``kind``: ``hello`` (``extra`` = degree), ``model``, ``share`` (push-sum), ``tau``
        (SpaFL thresholds) or ``bye``.
        """
        sending = np.flatnonzero(fanout > 0)
        self.seq[sending] += 1
        extras = np.zeros(len(self.ids), dtype=np.int64) if extra is None else extra
        classes = _bits(self.seq[sending]) * 64 + _bits(extras[sending])
        sizes = np.zeros(len(self.ids), dtype=np.int64)
        for cls in np.unique(classes):
            chosen = sending[classes == cls]
            p = int(chosen[0])
            sizes[chosen] = self._size(kind, int(self.seq[p]), round_index, int(extras[p]))
        self.bytes_sent += sizes * fanout
        self.messages_sent += fanout
        return sizes

    def add(self, sizes: np.ndarray, fanout: np.ndarray) -> np.ndarray:
        """Like ``send`` with each peer's message size already known (encoded by the caller
        with sequence number ``seq[p] + 1``); returns ``sizes``."""
        self.seq[fanout > 0] += 1
        self.bytes_sent += sizes * fanout
        self.messages_sent += fanout
        return sizes

    def upload(self, nbytes: int) -> None:
        """All-reduce: every peer uploads its raw model once (charged, not encoded)."""
        self.bytes_sent += nbytes
        self.messages_sent += 1


def _bits(values: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of each non-negative int64 (the msgpack size class follows it)."""
    out = np.zeros(values.shape, dtype=np.int64)
    rest = values.astype(np.int64).copy()
    while (rest > 0).any():
        out += rest > 0
        rest >>= 1
    return out
