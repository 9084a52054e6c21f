"""What methods send and receive: plain typed values, no wire types (the payload seam).

A method's ``outgoing`` returns ``(peer_id, payload)`` pairs of the values below; the node
maps each to a protocol message (``node.payload``), encodes it once and sends it. On receipt
the node decodes once, checks the payload against this peer's ``Signature`` (tensor names,
shapes, finiteness) and hands the method a list of ``Received`` — sender, payload and
staleness — in ``merge``. ``merge`` answers with a ``MergeResult``: ``MergeStats`` (one
schema for every method) and any replies to send.

Arrays are numpy; received arrays may be read-only views of the frame (copy before writing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar, TypeVar

import numpy as np

Arrays = Mapping[str, np.ndarray]
P = TypeVar("P")


@dataclass(frozen=True)
class Signature:
    """The tensors this peer exchanges, name → shape (model order), and the length of its
    SpaFL threshold vector (0 without thresholds); ``items`` feeds the Hello hash."""

    shapes: Mapping[str, tuple[int, ...]]
    thresholds: int = 0

    def items(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, dtype) triples, as ``protocol.model_signature`` hashes them."""
        out = [(name, shape, "float32") for name, shape in self.shapes.items()]
        if self.thresholds:
            out.append(("thresholds", (self.thresholds,), "float32"))
        return out


@dataclass(frozen=True, eq=False)
class Model:
    """A whole dense model (D-PSGD, all-reduce): name → float32 array."""

    arrays: Arrays


@dataclass(frozen=True, eq=False)
class PushShare:
    """A push-sum share: the sender's estimate z and the mass w it pushes (> 0)."""

    arrays: Arrays
    mass: float


@dataclass(frozen=True, eq=False)
class RunningSums:
    """Push-sum running sums of one link: σ_x per tensor (float64) and σ_w (>= 0)."""

    sums: Arrays
    mass: float


@dataclass(frozen=True, eq=False)
class MaskedArray:
    """One tensor of which only ``mask`` is held (values elsewhere are 0 and mean nothing).

    ``mask`` is a bool array of the tensor's shape, or ``None`` (sent dense; a received
    MaskedArray always has a mask). ``by_row``: the mask keeps or drops whole slices along
    axis 0 (SpaFL's units) and travels as one bit per slice.
    """

    values: np.ndarray
    mask: np.ndarray | None = None
    by_row: bool = False

    def held(self) -> np.ndarray:
        """The mask, all True when ``mask`` is None."""
        return np.ones(self.values.shape, dtype=bool) if self.mask is None else self.mask


@dataclass(frozen=True, eq=False)
class MaskedModel:
    """A sparse model: name → MaskedArray (FedSparsify, SpaFL's weight rounds)."""

    tensors: Mapping[str, MaskedArray]


@dataclass(frozen=True, eq=False)
class ThresholdVector:
    """SpaFL's thresholds, one float32 per masked unit."""

    values: np.ndarray


@dataclass(frozen=True, eq=False)
class SparseValues:
    """k values of a tensor of ``shape`` at sorted flat ``positions``; with ``seed`` set the
    positions are rand-k's draw from it and do not travel. ``value_dtype`` is how the values
    travel (float32, float16, bfloat16, int8); received values are what was decoded."""

    shape: tuple[int, ...]
    positions: np.ndarray
    values: np.ndarray
    seed: int | None = None
    value_dtype: str = "float32"


@dataclass(frozen=True, eq=False)
class StreamDelta:
    """One compressed step q of a CHOCO stream, numbered ``stream_seq`` (one q per round)."""

    stream_seq: int
    tensors: Mapping[str, SparseValues]


@dataclass(frozen=True, eq=False)
class StreamCopy:
    """The sender's whole public copy x̂, current to its stream number ``stream_seq``."""

    stream_seq: int
    arrays: Arrays


@dataclass(frozen=True)
class ResyncAsk:
    """Control: "I lost your stream after ``stream_seq``; send me a StreamCopy"."""

    stream_seq: int
    #: Control payloads reach ``merge`` on arrival, alone, and change no model.
    control: ClassVar[bool] = True


Payload = (
    Model
    | PushShare
    | RunningSums
    | MaskedModel
    | ThresholdVector
    | StreamDelta
    | StreamCopy
    | ResyncAsk
)


def is_control(payload: Payload) -> bool:
    """Whether ``payload`` is a control request (delivered at once, merged alone)."""
    return bool(getattr(payload, "control", False))


@dataclass(frozen=True, eq=False)
class Received:
    """One validated payload for ``merge``: who sent it and how many rounds late it is
    (the merging peer's round — its Lamport clock in async mode — minus the sender's, >= 0)."""

    sender: str
    payload: Payload
    staleness: int = 0


def newest(received: Sequence[Received], kind: type[P]) -> dict[str, tuple[P, int]]:
    """Per sender, its least stale payload of ``kind`` (the later one on a tie) and that
    staleness, senders in sorted order."""
    out: dict[str, tuple[P, int]] = {}
    for item in received:
        if isinstance(item.payload, kind):
            held = out.get(item.sender)
            if held is None or item.staleness <= held[1]:
                out[item.sender] = (item.payload, item.staleness)
    return {sender: out[sender] for sender in sorted(out)}


def by_sender(received: Sequence[Received], kind: type[P] | tuple[type, ...]) -> dict[str, list[P]]:
    """Every payload of ``kind`` (a type or a tuple of types), grouped by sender in sorted
    order, each sender's in arrival order (for methods that order a sender's stream)."""
    out: dict[str, list[P]] = {}
    for item in received:
        if isinstance(item.payload, kind):
            out.setdefault(item.sender, []).append(item.payload)  # type: ignore[arg-type]
    return {sender: out[sender] for sender in sorted(out)}


@dataclass(frozen=True)
class MergeStats:
    """What one merge did — the one schema of every method's statistics (``None``: does not
    apply to this method). Reported per round in ``RoundMetrics.merge`` (async mode: the mean
    over the merges since the last record).

    Every method: ``merged_peers`` senders whose payload entered the model; ``rejected``
    payloads refused by the method's own rules (a push-sum share too heavy, a Delta that does
    not fit its stream, a stranger); ``stale`` payloads skipped as duplicates or overtaken.
    D-PSGD family: ``staleness_mean`` of the merged models; ``clip_radius`` (robust=clip);
    ``robust_fallback`` 1 when trimmed fell back to the median; ``variance_factor`` the mean
    rescaling of variance correction. Push-sum: ``pushsum_mass`` after the merge,
    ``pushsum_shares`` shares taken, ``pushsum_guard`` mass clamps and refused merges.
    CHOCO: ``gaps`` stream gaps seen, ``resyncs`` copies reset. SpaFL:
    ``weights_merged_peers`` senders of masked weights, ``threshold_mean`` after the mix.
    FedSparsify: ``sparsity_target`` s_t of the schedule.
    """

    merged_peers: int = 0
    rejected: int = 0
    stale: int = 0
    staleness_mean: float | None = None
    clip_radius: float | None = None
    robust_fallback: float | None = None
    variance_factor: float | None = None
    pushsum_mass: float | None = None
    pushsum_shares: int | None = None
    pushsum_guard: int | None = None
    gaps: int | None = None
    resyncs: int | None = None
    weights_merged_peers: int | None = None
    threshold_mean: float | None = None
    sparsity_target: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The fields that apply, as floats (``RoundMetrics.merge``)."""
        return {k: float(v) for k, v in self._items() if v is not None}

    def _items(self) -> Iterator[tuple[str, float | int | None]]:
        for f in fields(self):
            yield f.name, getattr(self, f.name)


@dataclass(frozen=True)
class MergeResult:
    """``merge``'s answer: its statistics and the payloads to send in reply (a resync ask,
    say), as (peer_id, payload) pairs."""

    stats: MergeStats = field(default_factory=MergeStats)
    replies: Sequence[tuple[str, Payload]] = ()
