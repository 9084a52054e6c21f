"""Mask codecs: a k-of-n set of positions as a bitmap, delta-varint gaps or Rice-coded gaps.

On the wire a mask is the msgpack array [method, k, payload: bin] (PROTOCOL.md §5), where k is
the number of True positions and n comes from the tensor's shape. The encoder computes the
exact size of every method and sends the smallest. For the gap codes it codes the smaller of
the set and its complement (methods 2 and 4), so a 90 %-dense mask costs what a 10 % one does.

All codecs are vectorised with numpy: no Python loop runs per element.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from spargo.protocol.errors import Reason, RemoteProtocolError

__all__ = [
    "MaskMethod",
    "decode_index_set",
    "decode_mask",
    "encode_index_set",
    "encode_mask",
    "mask_bound_nbytes",
]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
_MAX_RICE_PARAMETER = 31
_MAX_VARINT_BYTES = 5  # gaps are < 2**32, which LEB128 writes in at most 5 bytes


class MaskMethod(enum.IntEnum):
    """How the payload of a mask is coded."""

    BITMAP = 0  # ceil(n/8) bytes, bit i of byte j is position 8j+i (LSB first)
    VARINT = 1  # LEB128 gaps between the True positions
    VARINT_COMPLEMENT = 2  # LEB128 gaps between the False positions
    RICE = 3  # Rice-coded gaps between the True positions
    RICE_COMPLEMENT = 4  # Rice-coded gaps between the False positions


def mask_bound_nbytes(n: int, k: int) -> float:
    """The information-theoretic lower bound log2 C(n, k) / 8 for a k-of-n mask, in bytes."""
    log_c = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return log_c / math.log(2) / 8


def _gaps(positions: IntArray) -> IntArray:
    """Gaps between sorted unique positions: g0 = p0, gi = pi - p(i-1) - 1."""
    return np.diff(positions, prepend=-1) - 1


def _varint_lengths(gaps: IntArray) -> IntArray:
    lengths = np.ones(gaps.size, dtype=np.int64)
    for j in range(1, _MAX_VARINT_BYTES):
        lengths += gaps >= (1 << (7 * j))
    return lengths


def _encode_varint(gaps: IntArray, lengths: IntArray) -> bytes:
    starts = np.cumsum(lengths) - lengths
    out = np.zeros(int(lengths.sum()), dtype=np.uint8)
    for j in range(int(lengths.max(initial=0))):
        sel = lengths > j
        group = (gaps[sel] >> (7 * j)) & 0x7F
        more = (lengths[sel] > j + 1).astype(np.int64) << 7
        out[starts[sel] + j] = group | more
    return out.tobytes()


def _rice_parameter(gaps: IntArray, n: int) -> tuple[int, int]:
    """The Rice parameter near log2(0.69·n/m) that gives the shortest code; (r, nbytes)."""
    m = gaps.size
    guess = max(0, int(math.log2(max(0.69 * n / m, 1.0))))
    best = (0, -1)
    for r in range(max(0, guess - 1), min(guess + 2, _MAX_RICE_PARAMETER) + 1):
        unary_bits = int((gaps >> r).sum()) + m
        nbytes = 1 + -(-m * r // 8) + -(-unary_bits // 8)
        if best[1] < 0 or nbytes < best[1]:
            best = (r, nbytes)
    return best


def _encode_rice(gaps: IntArray, r: int) -> bytes:
    """[r][m r-bit remainders, MSB first][m unary quotients: q ones then a zero], each padded."""
    shifts = np.arange(r - 1, -1, -1, dtype=np.int64)
    remainders = np.packbits(((gaps[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1))
    quotients = gaps >> r
    unary = np.ones(int(quotients.sum()) + gaps.size, dtype=np.uint8)
    unary[np.cumsum(quotients + 1) - 1] = 0
    return bytes([r]) + remainders.tobytes() + np.packbits(unary).tobytes()


def encode_mask(mask: BoolArray) -> list[Any]:
    """Encode a flat bool mask as [method, k, payload], choosing the smallest method."""
    n = mask.size
    k = int(np.count_nonzero(mask))
    complement = k > n - k
    positions = np.flatnonzero(~mask if complement else mask).astype(np.int64)
    gaps = _gaps(positions)
    bitmap_nbytes = -(-n // 8)
    lengths = _varint_lengths(gaps)
    varint_nbytes = int(lengths.sum())
    r, rice_nbytes = _rice_parameter(gaps, n) if gaps.size else (0, 1)
    if bitmap_nbytes <= min(varint_nbytes, rice_nbytes):
        payload = np.packbits(mask, bitorder="little").tobytes()
        return [int(MaskMethod.BITMAP), k, payload]
    if varint_nbytes <= rice_nbytes:
        method = MaskMethod.VARINT_COMPLEMENT if complement else MaskMethod.VARINT
        return [int(method), k, _encode_varint(gaps, lengths)]
    method = MaskMethod.RICE_COMPLEMENT if complement else MaskMethod.RICE
    return [int(method), k, _encode_rice(gaps, r)]


def encode_index_set(indices: IntArray, n: int) -> list[Any]:
    """Encode sorted unique flat indices into range(n) as a mask (same wire form)."""
    mask = np.zeros(n, dtype=np.bool_)
    mask[indices] = True
    return encode_mask(mask)


def _bad(reason: Reason, detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, detail)


def _decode_varint(payload: bytes, m: int) -> IntArray:
    if len(payload) > _MAX_VARINT_BYTES * m:
        raise _bad(Reason.MALFORMED, "varint payload longer than its count allows")
    data = np.frombuffer(payload, dtype=np.uint8)
    ends = np.flatnonzero(data < 0x80)
    if ends.size != m or (m and ends[-1] != data.size - 1):
        raise _bad(Reason.MALFORMED, f"varint payload does not hold exactly {m} values")
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = np.diff(ends, prepend=-1)
    if lengths.max() > _MAX_VARINT_BYTES or ((lengths > 1) & (data[ends] == 0)).any():
        raise _bad(Reason.MALFORMED, "varint too long or not minimal")
    starts = ends - lengths + 1
    offset = np.arange(data.size, dtype=np.int64) - np.repeat(starts, lengths)
    groups = (data & 0x7F).astype(np.int64) << (7 * offset)
    return np.add.reduceat(groups, starts)


def _decode_rice(payload: bytes, m: int, n: int) -> IntArray:
    if not payload:
        raise _bad(Reason.MALFORMED, "Rice payload lacks its parameter byte")
    r = payload[0]
    rem_nbytes = -(-m * r // 8)
    # Each quotient is at most n, so the unary part is at most n + m bits: check before unpacking.
    too_long = len(payload) > 1 + rem_nbytes + -(-(n + m) // 8)
    if r > _MAX_RICE_PARAMETER or too_long or len(payload) < 1 + rem_nbytes:
        raise _bad(Reason.MALFORMED, "Rice parameter or payload length out of range")
    rem_bits = np.unpackbits(np.frombuffer(payload, np.uint8, rem_nbytes, 1))
    unary = np.unpackbits(np.frombuffer(payload, np.uint8, offset=1 + rem_nbytes))
    if rem_bits[m * r :].any():
        raise _bad(Reason.MALFORMED, "nonzero padding in Rice remainders")
    zeros = np.flatnonzero(unary == 0)[:m]
    if zeros.size != m:
        raise _bad(Reason.MALFORMED, f"Rice payload holds fewer than {m} gaps")
    used = int(zeros[-1]) + 1 if m else 0
    if -(-used // 8) != unary.size // 8 or unary[used:].any():
        raise _bad(Reason.MALFORMED, "Rice payload has trailing bytes or nonzero padding")
    quotients = np.diff(zeros, prepend=-1) - 1
    weights = np.int64(1) << np.arange(r - 1, -1, -1, dtype=np.int64)
    remainders = rem_bits[: m * r].reshape(m, r).astype(np.int64) @ weights
    return (quotients.astype(np.int64) << r) | remainders


def _positions_from_gaps(gaps: IntArray, n: int) -> IntArray:
    if gaps.size and int(gaps.max()) >= n:
        raise _bad(Reason.SHAPE, "mask position out of range")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and positions[-1] >= n:
        raise _bad(Reason.SHAPE, "mask position out of range")
    return positions


def _decode(obj: object, n: int) -> tuple[MaskMethod, int, bytes]:
    if not isinstance(obj, list | tuple) or len(obj) != 3:
        raise _bad(Reason.MALFORMED, "a mask must be [method, k, payload]")
    method, k, payload = obj
    if not isinstance(method, int) or method not in MaskMethod._value2member_map_:
        raise _bad(Reason.MALFORMED, f"unknown mask method {method!r}")
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= n:
        raise _bad(Reason.SHAPE, f"mask count {k!r} outside 0..{n}")
    if not isinstance(payload, bytes):
        raise _bad(Reason.MALFORMED, "mask payload must be bin")
    return MaskMethod(method), k, payload


def decode_mask(obj: object, n: int) -> tuple[BoolArray, int]:
    """Decode a wire mask over n positions into (flat bool mask, k)."""
    method, k, payload = _decode(obj, n)
    if method is MaskMethod.BITMAP:
        if len(payload) != -(-n // 8):
            raise _bad(Reason.SHAPE, f"bitmap must be {-(-n // 8)} bytes for {n} positions")
        bits = np.unpackbits(np.frombuffer(payload, np.uint8), bitorder="little")
        if bits[n:].any():
            raise _bad(Reason.MALFORMED, "nonzero padding bits in bitmap")
        mask = bits[:n].view(np.bool_)
        if int(np.count_nonzero(mask)) != k:
            raise _bad(Reason.SHAPE, "bitmap population differs from its count")
        return mask, k
    complement = method in (MaskMethod.VARINT_COMPLEMENT, MaskMethod.RICE_COMPLEMENT)
    m = n - k if complement else k
    if method in (MaskMethod.VARINT, MaskMethod.VARINT_COMPLEMENT):
        gaps = _decode_varint(payload, m)
    else:
        gaps = _decode_rice(payload, m, n)
    positions = _positions_from_gaps(gaps, n)
    mask = np.full(n, complement, dtype=np.bool_)
    mask[positions] = not complement
    return mask, k


def decode_index_set(obj: object, n: int) -> IntArray:
    """Decode a wire mask over n positions into its sorted int64 True positions."""
    mask, _ = decode_mask(obj, n)
    return np.flatnonzero(mask).astype(np.int64)
