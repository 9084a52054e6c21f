"""The one place that maps method payloads to protocol messages and back (the payload seam).

``to_message`` turns what a method sends (``node.methods.payloads``) into the protocol
message that carries it; ``from_message`` turns a decoded message into the payload a method
merges, after checking it once against this peer's ``Signature``: the tensor names and shapes
must be ours, the threshold vector our length, a CHOCO delta's positions regenerable, and —
only when the decoder was told to let NaN/Inf through — every value finite. A payload that
fails raises ``PayloadMismatch`` (the node counts it as the drop reason ``mismatch``).

    Model ↔ FullModel            PushShare ↔ PushSumShare       RunningSums ↔ RunningSums
    MaskedModel ↔ MaskedUpdate   ThresholdVector ↔ Thresholds   StreamDelta ↔ Delta
    StreamCopy ↔ StreamCopy      ResyncAsk ↔ ResyncRequest
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spargo import protocol as wire
from spargo import sparse
from spargo.node.methods import payloads as p

__all__ = [
    "PayloadMismatch",
    "from_message",
    "received_values",
    "signature_hash",
    "to_message",
]


class PayloadMismatch(ValueError):
    """A well-formed message whose payload does not fit this peer's model."""


def received_values(values: np.ndarray, value_dtype: str) -> np.ndarray:
    """The float32 values a receiver decodes from ``values`` sent as ``value_dtype`` — what a
    sender that mirrors its receivers' view (CHOCO's x̂) adds to it. No bytes are built."""
    return wire.as_decoded(values, value_dtype)


# --- sending ----------------------------------------------------------------------------
def _dense(arrays: p.Arrays, dtype: str = "float32") -> tuple[wire.NamedTensor, ...]:
    return tuple(wire.NamedTensor(name, a, dtype) for name, a in arrays.items())


def _masked(name: str, t: p.MaskedArray) -> Any:
    if t.mask is None:
        return wire.NamedTensor(name, t.values)
    shape = tuple(t.values.shape)
    if t.by_row:
        rows = shape[0] if shape else 0
        unit = np.asarray(t.mask.reshape(rows, -1).any(axis=1) if rows else [], dtype=bool)
        return wire.UnitMaskedTensor(name, shape, unit, t.values[unit].reshape(-1))
    return wire.MaskedTensor(name, shape, t.mask.reshape(-1), t.values[t.mask])


def _sparse(name: str, t: p.SparseValues) -> wire.SparseTensor:
    indices = None if t.seed is not None else t.positions
    return wire.SparseTensor(
        name, t.shape, t.values, indices=indices, seed=t.seed, wire_dtype=t.value_dtype
    )


_TO: dict[type, Callable[[Any], wire.Message]] = {
    p.Model: lambda x: wire.FullModel(_dense(x.arrays)),
    p.PushShare: lambda x: wire.PushSumShare(x.mass, _dense(x.arrays)),
    p.RunningSums: lambda x: wire.RunningSums(x.mass, _dense(x.sums, wire.EXACT_DTYPE)),
    p.MaskedModel: lambda x: wire.MaskedUpdate(tuple(_masked(n, t) for n, t in x.tensors.items())),
    p.ThresholdVector: lambda x: wire.Thresholds(x.values),
    p.StreamDelta: lambda x: wire.Delta(
        x.stream_seq, tuple(_sparse(n, t) for n, t in x.tensors.items())
    ),
    p.StreamCopy: lambda x: wire.StreamCopy(x.stream_seq, _dense(x.arrays)),
    p.ResyncAsk: lambda x: wire.ResyncRequest(x.stream_seq),
}


def to_message(payload: p.Payload) -> wire.Message:
    """The protocol message that carries ``payload``; TypeError for anything else."""
    build = _TO.get(type(payload))
    if build is None:
        raise TypeError(f"not a method payload: {type(payload).__name__}")
    return build(payload)


# --- receiving --------------------------------------------------------------------------
def _check_names(names: Sequence[str], signature: p.Signature) -> None:
    if sorted(names) != sorted(signature.shapes):
        raise PayloadMismatch("tensor names differ from this model's")


def _check_shape(name: str, shape: tuple[int, ...], signature: p.Signature) -> None:
    if tuple(shape) != signature.shapes[name]:
        raise PayloadMismatch(f"tensor {name!r} has shape {shape}, ours {signature.shapes[name]}")


def _finite(values: np.ndarray, check: bool) -> None:
    if check and not np.isfinite(values).all():
        raise PayloadMismatch("values hold NaN or Inf")


def _arrays(tensors: Sequence[wire.NamedTensor], sig: p.Signature, check: bool) -> p.Arrays:
    _check_names([t.name for t in tensors], sig)
    for t in tensors:
        _check_shape(t.name, tuple(t.array.shape), sig)
        _finite(t.array, check)
    return {t.name: t.array for t in tensors}


def _masked_array(t: Any, sig: p.Signature, check: bool) -> p.MaskedArray:
    if isinstance(t, wire.NamedTensor):
        _check_shape(t.name, tuple(t.array.shape), sig)
        _finite(t.array, check)
        return p.MaskedArray(t.array, np.ones(t.array.shape, dtype=bool))
    shape = tuple(t.shape)
    _check_shape(t.name, shape, sig)
    _finite(t.values, check)
    if isinstance(t, wire.MaskedTensor):
        return p.MaskedArray(t.dense(), t.mask.reshape(shape))
    rows = t.unit_mask.reshape((-1,) + (1,) * (len(shape) - 1))
    return p.MaskedArray(t.dense(), np.broadcast_to(rows, shape).copy(), by_row=True)


def _sparse_values(t: Any, sig: p.Signature, check: bool) -> p.SparseValues:
    if isinstance(t, wire.NamedTensor):
        shape = tuple(t.array.shape)
        _check_shape(t.name, shape, sig)
        _finite(t.array, check)
        positions = np.arange(math.prod(shape), dtype=np.int64)
        return p.SparseValues(shape, positions, t.array.reshape(-1), None, t.wire_dtype)
    _check_shape(t.name, tuple(t.shape), sig)
    _finite(t.values, check)
    if t.indices is not None:
        positions = t.indices
    else:
        try:
            n, k = math.prod(t.shape), int(t.values.size)
            positions = sparse.randk_indices(n, k, int(t.seed)).numpy()
        except sparse.SparseError as exc:
            raise PayloadMismatch(f"rand-k positions cannot be drawn: {exc}") from None
    return p.SparseValues(tuple(t.shape), positions, t.values, t.seed, t.wire_dtype)


def _thresholds(body: wire.Thresholds, sig: p.Signature, check: bool) -> p.ThresholdVector:
    if not sig.thresholds or body.values.shape != (sig.thresholds,):
        raise PayloadMismatch(f"{body.values.size} thresholds, ours {sig.thresholds}")
    _finite(body.values, check)
    return p.ThresholdVector(body.values)


def _masked_model(body: wire.MaskedUpdate, sig: p.Signature, check: bool) -> p.MaskedModel:
    _check_names([t.name for t in body.tensors], sig)
    return p.MaskedModel({t.name: _masked_array(t, sig, check) for t in body.tensors})


def _delta(body: wire.Delta, sig: p.Signature, check: bool) -> p.StreamDelta:
    _check_names([t.name for t in body.tensors], sig)
    tensors = {t.name: _sparse_values(t, sig, check) for t in body.tensors}
    return p.StreamDelta(body.link_seq, tensors)


_FROM: dict[type, Callable[[Any, p.Signature, bool], p.Payload]] = {
    wire.FullModel: lambda m, s, c: p.Model(_arrays(m.tensors, s, c)),
    wire.PushSumShare: lambda m, s, c: p.PushShare(_arrays(m.tensors, s, c), m.mass),
    wire.RunningSums: lambda m, s, c: p.RunningSums(_arrays(m.tensors, s, c), m.mass),
    wire.MaskedUpdate: _masked_model,
    wire.Thresholds: _thresholds,
    wire.Delta: _delta,
    wire.StreamCopy: lambda m, s, c: p.StreamCopy(m.link_seq, _arrays(m.tensors, s, c)),
    wire.ResyncRequest: lambda m, s, c: p.ResyncAsk(m.link_seq),
}


def from_message(
    body: wire.Message, signature: p.Signature, *, check_finite: bool = False
) -> p.Payload:
    """The payload ``body`` carries, checked against ``signature``; PayloadMismatch when it
    does not fit, TypeError for Hello/Bye (the node handles those itself). ``check_finite``:
    reject NaN/Inf (needed only when the decoder's limits let them through)."""
    read = _FROM.get(type(body))
    if read is None:
        raise TypeError(f"{type(body).__name__} carries no method payload")
    return read(body, signature, check_finite)


def signature_hash(signature: p.Signature) -> str:
    """The model signature a Hello carries: equal iff two peers exchange the same tensors."""
    return wire.model_signature(signature.items())
