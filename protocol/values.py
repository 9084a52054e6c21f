"""Value codecs: float32, float16, bfloat16 and block-scaled int8 arrays on the wire.

A value block on the wire is a msgpack array (see PROTOCOL.md §4):

    ["float32" | "float16" | "bfloat16", data: bin]       little-endian, count × itemsize bytes
    ["int8", data: bin, scales: bin]                      count int8 + ceil(count/256) fp32 scales
    ["float64", data: bin]                                exact sums (RunningSums only)

The element count is never sent here: the receiver knows it from the shape or the mask, so a
lying count cannot make it allocate. Decoding float32 returns a read-only view of the received
bytes (no copy); the other dtypes are widened to a fresh float32 array (float64 stays float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from spargo.protocol.errors import LocalProtocolError, Reason, RemoteProtocolError

__all__ = [
    "EXACT_DTYPE",
    "INT8_BLOCK",
    "WIRE_DTYPES",
    "as_decoded",
    "check_wire_dtype",
    "decode_values",
    "dequantize_int8",
    "encode_values",
    "quantize_int8",
]

#: The value dtypes of model tensors (a receiver decodes each to float32).
WIRE_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "int8")
#: The dtype of exact sums; only RunningSums carries it.
EXACT_DTYPE = "float64"
INT8_BLOCK = 256  # elements per fp32 scale in the int8 codec
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, EXACT_DTYPE: 8}
_F32 = np.dtype("<f4")
_F64 = np.dtype("<f8")
_F16 = np.dtype("<f2")
_U16 = np.dtype("<u2")

F32Array = npt.NDArray[np.float32]


def check_wire_dtype(wire_dtype: object, *, exact_ok: bool = False) -> str:
    """Return `wire_dtype` if it is one of WIRE_DTYPES (or EXACT_DTYPE when `exact_ok`), else
    raise LocalProtocolError."""
    if wire_dtype not in WIRE_DTYPES and not (exact_ok and wire_dtype == EXACT_DTYPE):
        raise LocalProtocolError(f"wire_dtype must be one of {WIRE_DTYPES}, got {wire_dtype!r}")
    return str(wire_dtype)


def _to_bfloat16(x: F32Array) -> npt.NDArray[np.uint16]:
    """Round float32 to the upper 16 bits, to nearest even; NaN stays a (quiet) NaN."""
    bits = x.view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(_U16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def quantize_int8(x: F32Array) -> tuple[npt.NDArray[np.int8], F32Array]:
    """Symmetric int8 with one fp32 scale (max |x| / 127) per block of INT8_BLOCK elements."""
    count = x.size
    blocks = -(-count // INT8_BLOCK)
    padded = np.zeros(blocks * INT8_BLOCK, dtype=np.float32)
    padded[:count] = x
    padded2 = padded.reshape(blocks, INT8_BLOCK)
    scales = (np.abs(padded2).max(axis=1) / np.float32(127.0)).astype(_F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(scales > 0, np.float32(1.0) / scales, np.float32(0.0))
        scaled = padded2 * inverse[:, None].astype(np.float32)
        q = np.clip(np.rint(scaled), -127, 127).astype(np.int8).reshape(-1)[:count]
    return q, scales


def dequantize_int8(q: npt.NDArray[np.int8], scales: F32Array) -> F32Array:
    """Inverse of quantize_int8 (up to rounding): q × its block's scale, as float32."""
    out = q.astype(np.float32)
    full = q.size // INT8_BLOCK
    body = out[: full * INT8_BLOCK].reshape(full, INT8_BLOCK)
    body *= scales[:full, None]
    if full * INT8_BLOCK < q.size:
        out[full * INT8_BLOCK :] *= scales[full]
    return out


def _raw(array: np.ndarray[Any, Any]) -> memoryview:
    """The bytes of a C-contiguous array, without a copy (msgpack packs it as bin)."""
    return array.data.cast("B")


def encode_values(x: np.ndarray[Any, Any], wire_dtype: str) -> list[Any]:
    """Encode a real array (any shape, read in C order) as a value block of `wire_dtype`."""
    if wire_dtype == EXACT_DTYPE:
        return [EXACT_DTYPE, _raw(np.ascontiguousarray(x, dtype=_F64).reshape(-1))]
    flat = np.ascontiguousarray(x, dtype=_F32).reshape(-1)
    if wire_dtype == "float32":
        return ["float32", _raw(flat)]
    if wire_dtype == "float16":
        with np.errstate(over="ignore"):
            half = flat.astype(_F16)
        if not np.isfinite(half).all() and np.isfinite(flat).all():
            raise LocalProtocolError(
                "values exceed the float16 range (65504); send them as float32 or bfloat16"
            )
        return ["float16", _raw(half)]
    if wire_dtype == "bfloat16":
        return ["bfloat16", _raw(_to_bfloat16(flat))]
    if wire_dtype == "int8":
        q, scales = quantize_int8(flat)
        return ["int8", _raw(q), _raw(scales)]
    raise LocalProtocolError(f"wire_dtype must be one of {WIRE_DTYPES}, got {wire_dtype!r}")


def as_decoded(x: np.ndarray[Any, Any], wire_dtype: str) -> F32Array:
    """The float32 values a receiver decodes from ``x`` sent as ``wire_dtype`` (same shape),
    computed without building a value block: what a sender that keeps a copy of its receivers'
    view (CHOCO) must add to it. float16 overflow raises LocalProtocolError as encoding does."""
    flat = np.ascontiguousarray(x, dtype=_F32).reshape(-1)
    if wire_dtype == "float32":
        out = flat.copy()
    elif wire_dtype == "float16":
        with np.errstate(over="ignore"):
            half = flat.astype(_F16)
        if not np.isfinite(half).all() and np.isfinite(flat).all():
            raise LocalProtocolError(
                "values exceed the float16 range (65504); send them as float32 or bfloat16"
            )
        out = half.astype(np.float32)
    elif wire_dtype == "bfloat16":
        out = (_to_bfloat16(flat).astype(np.uint32) << 16).view(np.float32)
    elif wire_dtype == "int8":
        out = dequantize_int8(*quantize_int8(flat))
    else:
        raise LocalProtocolError(f"wire_dtype must be one of {WIRE_DTYPES}, got {wire_dtype!r}")
    return out.reshape(np.shape(x))


def _malformed(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(Reason.MALFORMED, detail)


def decode_values(
    obj: object,
    count: int,
    *,
    allow_nonfinite: bool,
    dtypes: tuple[str, ...] = WIRE_DTYPES,
) -> tuple[np.ndarray[Any, Any], str]:
    """Decode a value block that must hold exactly `count` elements of one of `dtypes`;
    return (float32 values — float64 for EXACT_DTYPE —, dtype)."""
    if not isinstance(obj, list | tuple) or not obj:
        raise _malformed("a value block must be a non-empty array")
    wire_dtype = obj[0]
    if not isinstance(wire_dtype, str) or wire_dtype not in _ITEMSIZE:
        raise RemoteProtocolError(Reason.DTYPE, f"unknown wire dtype {wire_dtype!r}")
    if wire_dtype not in dtypes:
        raise RemoteProtocolError(Reason.DTYPE, f"{wire_dtype} not allowed here, only {dtypes}")
    if len(obj) != (3 if wire_dtype == "int8" else 2):
        raise _malformed(f"a {wire_dtype} value block has the wrong number of fields")
    data = obj[1]
    if not isinstance(data, bytes) or len(data) != count * _ITEMSIZE[wire_dtype]:
        raise RemoteProtocolError(Reason.SHAPE, f"{wire_dtype} data must hold {count} values")
    out: np.ndarray[Any, Any]
    if wire_dtype == "float32":
        out = np.frombuffer(data, dtype=_F32)
    elif wire_dtype == EXACT_DTYPE:
        out = np.frombuffer(data, dtype=_F64)
    elif wire_dtype == "float16":
        out = np.frombuffer(data, dtype=_F16).astype(np.float32)
    elif wire_dtype == "bfloat16":
        out = (np.frombuffer(data, dtype=_U16).astype(np.uint32) << 16).view(np.float32)
    else:
        scales_raw = obj[2]
        n_scales = -(-count // INT8_BLOCK)
        if not isinstance(scales_raw, bytes) or len(scales_raw) != 4 * n_scales:
            raise RemoteProtocolError(Reason.SHAPE, f"int8 needs {n_scales} fp32 scales")
        scales = np.frombuffer(scales_raw, dtype=_F32)
        if not allow_nonfinite and not np.isfinite(scales).all():
            raise RemoteProtocolError(Reason.NONFINITE, "int8 scales hold NaN or Inf")
        return dequantize_int8(np.frombuffer(data, dtype=np.int8), scales), wire_dtype
    if not allow_nonfinite and not np.isfinite(out).all():
        raise RemoteProtocolError(Reason.NONFINITE, f"{wire_dtype} values hold NaN or Inf")
    return out, wire_dtype
