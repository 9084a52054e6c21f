"""Message bodies to and from msgpack objects (PROTOCOL.md §3–§6).

`encode_body` turns a message into (type code, msgpack-ready object); `decode_body` checks an
untrusted msgpack object against the grammar and the limits and builds the message. Decoding
raises only RemoteProtocolError; sizes claimed by the peer are checked before allocating.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from spargo.protocol.errors import LocalProtocolError, Reason, RemoteProtocolError
from spargo.protocol.limits import Limits
from spargo.protocol.masks import decode_index_set, decode_mask, encode_index_set, encode_mask
from spargo.protocol.messages import (
    Bye,
    Delta,
    FullModel,
    Hello,
    MaskedTensor,
    MaskedUpdate,
    Message,
    NamedTensor,
    PushSumShare,
    ResyncRequest,
    RunningSums,
    SparseTensor,
    StreamCopy,
    Thresholds,
    UnitMaskedTensor,
)
from spargo.protocol.values import EXACT_DTYPE, WIRE_DTYPES, decode_values, encode_values

__all__ = ["CODECS", "MESSAGE_TYPES", "MessageType", "TensorKind", "decode_body", "encode_body"]

Tensor = NamedTensor | MaskedTensor | UnitMaskedTensor | SparseTensor


class MessageType(enum.IntEnum):
    """Type codes of the message bodies."""

    HELLO = 1
    THRESHOLDS = 2
    MASKED_UPDATE = 3
    FULL_MODEL = 4
    DELTA = 5
    RESYNC_REQUEST = 6
    BYE = 7
    PUSH_SUM_SHARE = 8
    RUNNING_SUMS = 9
    STREAM_COPY = 10


class TensorKind(enum.IntEnum):
    """The first field of a tensor record."""

    DENSE = 0
    MASKED = 1
    UNIT_MASKED = 2
    SPARSE_INDICES = 3
    SPARSE_SEED = 4


def _encode_tensor(t: Tensor) -> list[Any]:
    if isinstance(t, NamedTensor):
        shape = list(t.array.shape)
        return [TensorKind.DENSE, t.name, shape, encode_values(t.array, t.wire_dtype)]
    values = encode_values(t.values, t.wire_dtype)
    shape = list(t.shape)
    if isinstance(t, MaskedTensor):
        return [TensorKind.MASKED, t.name, shape, encode_mask(t.mask), values]
    if isinstance(t, UnitMaskedTensor):
        bits = np.packbits(t.unit_mask, bitorder="little").tobytes()
        return [TensorKind.UNIT_MASKED, t.name, shape, bits, values]
    if t.indices is not None:
        index_set = encode_index_set(t.indices, math.prod(t.shape))
        return [TensorKind.SPARSE_INDICES, t.name, shape, index_set, values]
    return [TensorKind.SPARSE_SEED, t.name, shape, t.seed, int(t.values.size), values]


def _tensor_list(message: Any) -> list[Any]:
    return [_encode_tensor(t) for t in message.tensors]


def _malformed(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(Reason.MALFORMED, detail)


def _fields(obj: object, count: int, what: str) -> tuple[Any, ...]:
    if not isinstance(obj, list | tuple) or len(obj) != count:
        raise _malformed(f"{what} must be an array of {count} fields")
    return tuple(obj)


def _uint(obj: object, what: str, high: int = 2**64) -> int:
    if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj < high:
        raise _malformed(f"{what} must be an unsigned int below {high}")
    return obj


def _text(obj: object, what: str, max_len: int, empty_ok: bool = False) -> str:
    if not isinstance(obj, str) or (not obj and not empty_ok):
        raise _malformed(f"{what} must be a non-empty str")
    if len(obj) > max_len:
        raise RemoteProtocolError(Reason.OVERSIZED, f"{what} longer than {max_len} characters")
    return obj


class _TensorReader:
    """Decodes tensor records of one message, keeping the element budget of the limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total_elements = 0
        #: The value dtypes the tensors being read may use.
        self.dtypes: tuple[str, ...] = WIRE_DTYPES

    def count(self, n: int) -> None:
        if n > self.limits.max_tensor_elements:
            raise RemoteProtocolError(Reason.OVERSIZED, f"tensor of {n} elements")
        self.total_elements += n
        if self.total_elements > self.limits.max_total_elements:
            raise RemoteProtocolError(Reason.OVERSIZED, "too many elements in one message")

    def shape(self, obj: object) -> tuple[int, ...]:
        if not isinstance(obj, list | tuple):
            raise _malformed("a shape must be an array of ints")
        if len(obj) > self.limits.max_ndim:
            raise RemoteProtocolError(Reason.SHAPE, f"more than {self.limits.max_ndim} axes")
        shape = tuple(_uint(d, "a shape entry", 2**32) for d in obj)
        self.count(math.prod(shape))
        return shape

    def values(self, obj: object, count: int) -> tuple[np.ndarray[Any, Any], str]:
        allow = self.limits.allow_nonfinite
        return decode_values(obj, count, allow_nonfinite=allow, dtypes=self.dtypes)

    def tensor(self, obj: object, allowed: frozenset[TensorKind]) -> Tensor:
        if not isinstance(obj, list | tuple) or len(obj) < 4:
            raise _malformed("a tensor must be an array [kind, name, shape, ...]")
        kind = obj[0]
        if not isinstance(kind, int) or kind not in TensorKind._value2member_map_:
            raise _malformed(f"unknown tensor kind {kind!r}")
        if TensorKind(kind) not in allowed:
            raise _malformed(f"tensor kind {TensorKind(kind).name} not allowed in this message")
        kind = TensorKind(kind)
        name = _text(obj[1], "a tensor name", self.limits.max_name_len)
        shape = self.shape(obj[2])
        n = math.prod(shape)
        if kind is TensorKind.DENSE:
            _fields(obj, 4, "a dense tensor")
            array, dtype = self.values(obj[3], n)
            return NamedTensor(name, array.reshape(shape), dtype)
        if kind is TensorKind.SPARSE_SEED:
            _, _, _, seed, k, values = _fields(obj, 6, "a seeded sparse tensor")
            seed, k = _uint(seed, "a seed"), _uint(k, "k")
            if k > n:
                raise RemoteProtocolError(Reason.SHAPE, f"k = {k} exceeds {n} elements")
            array, dtype = self.values(values, k)
            return SparseTensor(name, shape, array, seed=seed, wire_dtype=dtype)
        _, _, _, selection, values = _fields(obj, 5, "a masked or sparse tensor")
        if kind is TensorKind.MASKED:
            mask, k = decode_mask(selection, n)
            array, dtype = self.values(values, k)
            return MaskedTensor(name, shape, mask, array, dtype)
        if kind is TensorKind.SPARSE_INDICES:
            indices = decode_index_set(selection, n)
            array, dtype = self.values(values, indices.size)
            return SparseTensor(name, shape, array, indices=indices, wire_dtype=dtype)
        return self._unit_masked(name, shape, selection, values)

    def _unit_masked(
        self, name: str, shape: tuple[int, ...], bits: object, values: object
    ) -> Tensor:
        if not shape:
            raise RemoteProtocolError(Reason.SHAPE, "a unit-masked tensor needs an axis")
        units = shape[0]
        if not isinstance(bits, bytes) or len(bits) != -(-units // 8):
            raise RemoteProtocolError(Reason.SHAPE, f"unit mask must be {-(-units // 8)} bytes")
        unpacked = np.unpackbits(np.frombuffer(bits, np.uint8), bitorder="little")
        if unpacked[units:].any():
            raise _malformed("nonzero padding bits in unit mask")
        unit_mask = unpacked[:units].view(np.bool_)
        count = int(np.count_nonzero(unit_mask)) * math.prod(shape[1:])
        array, dtype = self.values(values, count)
        return UnitMaskedTensor(name, shape, unit_mask, array, dtype)

    def tensors(
        self, obj: object, allowed: frozenset[TensorKind], dtypes: tuple[str, ...] = WIRE_DTYPES
    ) -> tuple[Any, ...]:
        self.dtypes = dtypes
        if not isinstance(obj, list | tuple):
            raise _malformed("tensors must be an array")
        if len(obj) > self.limits.max_tensors:
            raise RemoteProtocolError(
                Reason.OVERSIZED, f"more than {self.limits.max_tensors} tensors"
            )
        tensors = tuple(self.tensor(t, allowed) for t in obj)
        if len({t.name for t in tensors}) != len(tensors):
            raise _malformed("duplicate tensor names")
        return tensors


def _mass(obj: object) -> float:
    if not isinstance(obj, float | int) or isinstance(obj, bool):
        raise _malformed("mass must be a number")
    if not math.isfinite(obj):
        raise RemoteProtocolError(Reason.NONFINITE, "mass is NaN or Inf")
    return float(obj)


_UPDATE_KINDS = frozenset({TensorKind.DENSE, TensorKind.MASKED, TensorKind.UNIT_MASKED})
_DELTA_KINDS = frozenset({TensorKind.DENSE, TensorKind.SPARSE_INDICES, TensorKind.SPARSE_SEED})
_DENSE_KINDS = frozenset({TensorKind.DENSE})


def _decode_hello(body: object, reader: _TensorReader) -> Hello:
    signature, public_key = _fields(body, 2, "Hello")
    if public_key is not None and (not isinstance(public_key, bytes) or len(public_key) != 32):
        raise _malformed("Hello.public_key must be nil or 32 bytes")
    text = _text(signature, "model_signature", reader.limits.max_name_len, empty_ok=True)
    return Hello(text, public_key)


def _decode_thresholds(body: object, reader: _TensorReader) -> Thresholds:
    (values,) = _fields(body, 1, "Thresholds")
    data = values[1] if isinstance(values, list | tuple) and len(values) > 1 else None
    count = len(data) // 4 if isinstance(data, bytes) else 0
    reader.count(count)
    allow = reader.limits.allow_nonfinite
    array, _ = decode_values(values, count, allow_nonfinite=allow, dtypes=("float32",))
    return Thresholds(array)


def _decode_masked_update(body: object, reader: _TensorReader) -> MaskedUpdate:
    (tensors,) = _fields(body, 1, "MaskedUpdate")
    return MaskedUpdate(reader.tensors(tensors, _UPDATE_KINDS))


def _decode_full_model(body: object, reader: _TensorReader) -> FullModel:
    (tensors,) = _fields(body, 1, "FullModel")
    return FullModel(reader.tensors(tensors, _DENSE_KINDS))


def _decode_delta(body: object, reader: _TensorReader) -> Delta:
    link_seq, tensors = _fields(body, 2, "Delta")
    return Delta(_uint(link_seq, "link_seq"), reader.tensors(tensors, _DELTA_KINDS))


def _decode_resync(body: object, reader: _TensorReader) -> ResyncRequest:
    (link_seq,) = _fields(body, 1, "ResyncRequest")
    return ResyncRequest(_uint(link_seq, "link_seq"))


def _decode_bye(body: object, reader: _TensorReader) -> Bye:
    (reason,) = _fields(body, 1, "Bye")
    return Bye(_text(reason, "Bye.reason", reader.limits.max_name_len, empty_ok=True))


def _decode_share(body: object, reader: _TensorReader) -> PushSumShare:
    mass, tensors = _fields(body, 2, "PushSumShare")
    return PushSumShare(_mass(mass), reader.tensors(tensors, _DENSE_KINDS))


def _decode_sums(body: object, reader: _TensorReader) -> RunningSums:
    mass, tensors = _fields(body, 2, "RunningSums")
    exact = (EXACT_DTYPE,)
    return RunningSums(_mass(mass), reader.tensors(tensors, _DENSE_KINDS, dtypes=exact))


def _decode_copy(body: object, reader: _TensorReader) -> StreamCopy:
    link_seq, tensors = _fields(body, 2, "StreamCopy")
    return StreamCopy(_uint(link_seq, "link_seq"), reader.tensors(tensors, _DENSE_KINDS))


@dataclass(frozen=True)
class _Codec:
    """How one message type travels: its type code, body encoder and body decoder."""

    code: MessageType
    encode: Callable[[Any], list[Any]]
    decode: Callable[[object, _TensorReader], Message]


#: The one table of message types (PROTOCOL.md §3): class → codec.
CODECS: dict[type, _Codec] = {
    Hello: _Codec(MessageType.HELLO, lambda m: [m.model_signature, m.public_key], _decode_hello),
    Thresholds: _Codec(
        MessageType.THRESHOLDS, lambda m: [encode_values(m.values, "float32")], _decode_thresholds
    ),
    MaskedUpdate: _Codec(
        MessageType.MASKED_UPDATE, lambda m: [_tensor_list(m)], _decode_masked_update
    ),
    FullModel: _Codec(MessageType.FULL_MODEL, lambda m: [_tensor_list(m)], _decode_full_model),
    Delta: _Codec(MessageType.DELTA, lambda m: [m.link_seq, _tensor_list(m)], _decode_delta),
    ResyncRequest: _Codec(MessageType.RESYNC_REQUEST, lambda m: [m.link_seq], _decode_resync),
    Bye: _Codec(MessageType.BYE, lambda m: [m.reason], _decode_bye),
    PushSumShare: _Codec(
        MessageType.PUSH_SUM_SHARE, lambda m: [m.mass, _tensor_list(m)], _decode_share
    ),
    RunningSums: _Codec(
        MessageType.RUNNING_SUMS, lambda m: [m.mass, _tensor_list(m)], _decode_sums
    ),
    StreamCopy: _Codec(
        MessageType.STREAM_COPY, lambda m: [m.link_seq, _tensor_list(m)], _decode_copy
    ),
}
_BY_CODE: dict[MessageType, _Codec] = {c.code: c for c in CODECS.values()}
#: The message classes, for ``isinstance`` checks.
MESSAGE_TYPES: tuple[type, ...] = tuple(CODECS)


def encode_body(message: Message) -> tuple[MessageType, list[Any]]:
    """The type code and msgpack-ready body of a message."""
    codec = CODECS.get(type(message))
    if codec is None:
        raise LocalProtocolError(f"not a protocol message: {type(message).__name__}")
    return codec.code, codec.encode(message)


def decode_body(type_code: object, body: object, limits: Limits) -> Message:
    """Check an untrusted (type code, body) pair and build the message it describes."""
    if not isinstance(type_code, int) or isinstance(type_code, bool):
        raise _malformed("the message type must be an int")
    if type_code not in MessageType._value2member_map_:
        raise RemoteProtocolError(Reason.UNKNOWN_TYPE, f"message type {type_code}")
    try:
        return _BY_CODE[MessageType(type_code)].decode(body, _TensorReader(limits))
    except LocalProtocolError as exc:  # a value that passed our checks but not the message's own
        raise RemoteProtocolError(Reason.MALFORMED, str(exc)) from exc
