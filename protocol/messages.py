"""The messages of the gossip protocol: frozen, slotted values that validate themselves.

Constructing a value with arguments it cannot carry raises LocalProtocolError. Arrays are
normalised on construction (float32, flat where the field is flat) and are not copied when
they already have the right dtype and layout. Values holding arrays compare by identity
(`eq=False`): compare their fields with numpy when you need to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spargo.protocol.errors import LocalProtocolError
from spargo.protocol.values import EXACT_DTYPE, check_wire_dtype

__all__ = [
    "PROTOCOL_VERSION",
    "Bye",
    "Delta",
    "FullModel",
    "Hello",
    "MaskedTensor",
    "MaskedUpdate",
    "Message",
    "NamedTensor",
    "PushSumShare",
    "ResyncRequest",
    "RunningSums",
    "SparseTensor",
    "StreamCopy",
    "Thresholds",
    "UnitMaskedTensor",
]

#: Version 3: a boot id (the sender's incarnation) and an Ed25519 signature flag in every frame,
#: an optional public key in Hello. Version 2: one meaning per field (push-sum mass, running sums
#: and CHOCO stream copies have their own messages).
PROTOCOL_VERSION = 3
_U64 = 2**64
_PUBLIC_KEY_BYTES = 32  # Ed25519 (protocol.identity)
_I64 = 2**63


def _check_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise LocalProtocolError(f"{what} must be a non-empty str, got {name!r}")
    return name


def _check_int(value: object, what: str, low: int = 0, high: int = _I64) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise LocalProtocolError(f"{what} must be an int, got {value!r}")
    if not low <= int(value) < high:
        raise LocalProtocolError(f"{what} must be in [{low}, {high}), got {value}")
    return int(value)


def _check_shape(shape: object) -> tuple[int, ...]:
    # Fast path (every decoded tensor goes through here): a tuple of plain in-range ints.
    if type(shape) is tuple and all(type(d) is int and 0 <= d < 2**32 for d in shape):
        return shape
    if not isinstance(shape, tuple | list):
        raise LocalProtocolError(f"shape must be a tuple of ints, got {shape!r}")
    return tuple(_check_int(d, "shape entries", 0, 2**32) for d in shape)


def _check_mass(mass: object, what: str, *, zero_ok: bool) -> float:
    if not isinstance(mass, float | int) or isinstance(mass, bool):
        raise LocalProtocolError(f"{what} must be a float, got {mass!r}")
    if not math.isfinite(mass) or mass < 0 or (mass == 0 and not zero_ok):
        low = ">= 0" if zero_ok else "> 0"
        raise LocalProtocolError(f"{what} must be finite and {low}, got {mass!r}")
    return float(mass)


def _as_float_array(array: object, what: str, bits: int = 32) -> npt.NDArray[Any]:
    if not isinstance(array, np.ndarray):
        raise LocalProtocolError(f"{what} must be a numpy array, got {type(array).__name__}")
    if array.dtype.kind not in "fiu":
        raise LocalProtocolError(f"{what} must hold real numbers, got dtype {array.dtype}")
    return np.asarray(array, dtype=np.float64 if bits == 64 else np.float32)


def _as_flat_values(values: object, count: int, what: str) -> npt.NDArray[np.float32]:
    flat = _as_float_array(values, what).reshape(-1)
    if flat.size != count:
        raise LocalProtocolError(f"{what} must hold {count} values, got {flat.size}")
    return flat


def _as_bool(mask: object, size: int, what: str) -> npt.NDArray[np.bool_]:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise LocalProtocolError(f"{what} must be a numpy bool array")
    if mask.size != size:
        raise LocalProtocolError(f"{what} must have {size} entries, got {mask.size}")
    return mask.reshape(-1)


@dataclass(frozen=True, slots=True, eq=False)
class NamedTensor:
    """A dense tensor; decoding gives a float32 array of the original shape (float64 when
    ``wire_dtype`` is ``"float64"``, which only RunningSums may carry)."""

    name: str
    array: np.ndarray[Any, Any]
    wire_dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_name(self.name)
        check_wire_dtype(self.wire_dtype, exact_ok=True)
        if self.wire_dtype == EXACT_DTYPE:
            array: np.ndarray[Any, Any] = _as_float_array(self.array, "NamedTensor.array", 64)
        else:
            array = _as_float_array(self.array, "NamedTensor.array")
        _check_shape(array.shape)
        object.__setattr__(self, "array", array)


@dataclass(frozen=True, slots=True, eq=False)
class MaskedTensor:
    """A tensor of `shape` of which only the positions where `mask` is True are sent."""

    name: str
    shape: tuple[int, ...]
    mask: npt.NDArray[np.bool_]
    values: npt.NDArray[np.float32]
    wire_dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_name(self.name)
        shape = _check_shape(self.shape)
        mask = _as_bool(self.mask, math.prod(shape), "MaskedTensor.mask")
        k = int(np.count_nonzero(mask))
        values = _as_flat_values(self.values, k, "MaskedTensor.values (one per True in mask)")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "values", values)
        check_wire_dtype(self.wire_dtype)

    def dense(self, fill: float = 0.0) -> npt.NDArray[np.float32]:
        """The tensor with `fill` where the mask is False (a new array)."""
        out = np.full(math.prod(self.shape), fill, dtype=np.float32)
        out[self.mask] = self.values
        return out.reshape(self.shape)


@dataclass(frozen=True, slots=True, eq=False)
class UnitMaskedTensor:
    """A structured (SpaFL) mask: one bit per output unit; the kept rows' values, in order."""

    name: str
    shape: tuple[int, ...]
    unit_mask: npt.NDArray[np.bool_]
    values: npt.NDArray[np.float32]
    wire_dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_name(self.name)
        shape = _check_shape(self.shape)
        if not shape:
            raise LocalProtocolError("UnitMaskedTensor needs a shape with at least one axis")
        unit_mask = _as_bool(self.unit_mask, shape[0], "UnitMaskedTensor.unit_mask")
        count = int(np.count_nonzero(unit_mask)) * math.prod(shape[1:])
        values = _as_flat_values(self.values, count, "UnitMaskedTensor.values (kept rows)")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "unit_mask", unit_mask)
        object.__setattr__(self, "values", values)
        check_wire_dtype(self.wire_dtype)

    def dense(self, fill: float = 0.0) -> npt.NDArray[np.float32]:
        """The tensor with `fill` in the dropped rows (a new array)."""
        out = np.full(self.shape, fill, dtype=np.float32)
        out[self.unit_mask] = self.values.reshape((-1, *self.shape[1:]))
        return out


@dataclass(frozen=True, slots=True, eq=False)
class SparseTensor:
    """k values at flat positions: explicit sorted `indices` (top-k) or a shared `seed` (rand-k).

    With a seed, no indices travel: the receiver regenerates them from (seed, k = len(values),
    n = prod(shape)) with the same generator as the sender (the compressor defines it).
    """

    name: str
    shape: tuple[int, ...]
    values: npt.NDArray[np.float32]
    indices: npt.NDArray[np.int64] | None = None
    seed: int | None = None
    wire_dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_name(self.name)
        shape = _check_shape(self.shape)
        n = math.prod(shape)
        values = _as_float_array(self.values, "SparseTensor.values").reshape(-1)
        if (self.indices is None) == (self.seed is None):
            raise LocalProtocolError("SparseTensor needs exactly one of indices and seed")
        if self.indices is not None:
            indices = np.asarray(self.indices)
            if indices.dtype.kind not in "iu" or indices.ndim != 1:
                raise LocalProtocolError("SparseTensor.indices must be a 1-D integer array")
            indices = indices.astype(np.int64, copy=False)
            if indices.size != values.size:
                raise LocalProtocolError("SparseTensor needs one value per index")
            if indices.size and (indices[0] < 0 or indices[-1] >= n):
                raise LocalProtocolError(f"SparseTensor.indices must lie in [0, {n})")
            if (np.diff(indices) <= 0).any():
                raise LocalProtocolError("SparseTensor.indices must be sorted and unique")
            object.__setattr__(self, "indices", indices)
        else:
            object.__setattr__(self, "seed", _check_int(self.seed, "SparseTensor.seed", 0, _U64))
            if values.size > n:
                raise LocalProtocolError(f"SparseTensor with a seed holds at most {n} values")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "values", values)
        check_wire_dtype(self.wire_dtype)


@dataclass(frozen=True, slots=True)
class Hello:
    """Sent first on every link: the model I train (peers with another signature are ignored)
    and, optionally, my Ed25519 public key (an announcement, PROTOCOL.md §2)."""

    model_signature: str
    public_key: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_signature, str):
            raise LocalProtocolError("Hello.model_signature must be a str")
        key = self.public_key
        if key is not None and (not isinstance(key, bytes) or len(key) != _PUBLIC_KEY_BYTES):
            raise LocalProtocolError(f"Hello.public_key must be None or {_PUBLIC_KEY_BYTES} bytes")


@dataclass(frozen=True, slots=True, eq=False)
class Thresholds:
    """SpaFL thresholds, one per masked unit, always sent as float32."""

    values: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        values = _as_float_array(self.values, "Thresholds.values")
        if values.ndim != 1:
            raise LocalProtocolError("Thresholds.values must be 1-D")
        object.__setattr__(self, "values", values)


def _check_tensors(tensors: object, allowed: tuple[type, ...], what: str) -> tuple[Any, ...]:
    if not isinstance(tensors, tuple | list):
        raise LocalProtocolError(f"{what}.tensors must be a tuple")
    names = set()
    for t in tensors:
        if not isinstance(t, allowed):
            kinds = ", ".join(a.__name__ for a in allowed)
            raise LocalProtocolError(f"{what}.tensors may hold {kinds}, got {type(t).__name__}")
        names.add(getattr(t, "name", None))
    if len(names) != len(tensors):
        raise LocalProtocolError(f"{what}.tensors has duplicate names")
    return tuple(tensors)


def _dense_tensors(tensors: object, what: str, *, exact: bool = False) -> tuple[Any, ...]:
    """NamedTensors, all float64 on the wire when ``exact``, none of them float64 otherwise."""
    checked = _check_tensors(tensors, (NamedTensor,), what)
    for t in checked:
        if (t.wire_dtype == EXACT_DTYPE) != exact:
            need = "float64" if exact else "float32, float16, bfloat16 or int8"
            raise LocalProtocolError(f"{what}.tensors must be {need} on the wire")
    return checked


@dataclass(frozen=True, slots=True, eq=False)
class MaskedUpdate:
    """Masked (or dense) tensors: a sparse model."""

    tensors: tuple[MaskedTensor | UnitMaskedTensor | NamedTensor, ...]

    def __post_init__(self) -> None:
        allowed = (MaskedTensor, UnitMaskedTensor, NamedTensor)
        tensors = _check_tensors(self.tensors, allowed, "MaskedUpdate")
        _dense_tensors([t for t in tensors if isinstance(t, NamedTensor)], "MaskedUpdate")
        object.__setattr__(self, "tensors", tensors)


@dataclass(frozen=True, slots=True, eq=False)
class FullModel:
    """A dense copy of the model."""

    tensors: tuple[NamedTensor, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", _dense_tensors(self.tensors, "FullModel"))


@dataclass(frozen=True, slots=True, eq=False)
class PushSumShare:
    """One push-sum share: the sender's estimate z (tensors) and the mass w it sends (> 0)."""

    mass: float
    tensors: tuple[NamedTensor, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mass", _check_mass(self.mass, "PushSumShare.mass", zero_ok=False))
        object.__setattr__(self, "tensors", _dense_tensors(self.tensors, "PushSumShare"))


@dataclass(frozen=True, slots=True, eq=False)
class RunningSums:
    """Push-sum running sums of one link: σ_w (mass, >= 0) and σ_x per tensor, in float64."""

    mass: float
    tensors: tuple[NamedTensor, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mass", _check_mass(self.mass, "RunningSums.mass", zero_ok=True))
        tensors = _dense_tensors(self.tensors, "RunningSums", exact=True)
        object.__setattr__(self, "tensors", tensors)


@dataclass(frozen=True, slots=True, eq=False)
class StreamCopy:
    """A CHOCO public copy x̂ of the sender, current to its Delta stream number link_seq."""

    link_seq: int
    tensors: tuple[NamedTensor, ...]

    def __post_init__(self) -> None:
        _check_int(self.link_seq, "StreamCopy.link_seq", 0, _U64)
        object.__setattr__(self, "tensors", _dense_tensors(self.tensors, "StreamCopy"))


@dataclass(frozen=True, slots=True, eq=False)
class Delta:
    """One step of a CHOCO stream on one link: compressed x - x̂, numbered per link."""

    link_seq: int
    tensors: tuple[SparseTensor | NamedTensor, ...]

    def __post_init__(self) -> None:
        _check_int(self.link_seq, "Delta.link_seq", 0, _U64)
        allowed = (SparseTensor, NamedTensor)
        tensors = _check_tensors(self.tensors, allowed, "Delta")
        _dense_tensors([t for t in tensors if isinstance(t, NamedTensor)], "Delta")
        object.__setattr__(self, "tensors", tensors)


@dataclass(frozen=True, slots=True)
class ResyncRequest:
    """ "I lost your delta stream after link_seq; send me a StreamCopy"."""

    link_seq: int

    def __post_init__(self) -> None:
        _check_int(self.link_seq, "ResyncRequest.link_seq", 0, _U64)


@dataclass(frozen=True, slots=True)
class Bye:
    """The sender leaves; receivers may forget its state."""

    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str):
            raise LocalProtocolError("Bye.reason must be a str")


Message = (
    Hello
    | Thresholds
    | MaskedUpdate
    | FullModel
    | Delta
    | ResyncRequest
    | Bye
    | PushSumShare
    | RunningSums
    | StreamCopy
)
