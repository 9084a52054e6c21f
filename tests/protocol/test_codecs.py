"""Property tests of the value and mask codecs: exact round trips and sizes near the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spargo.protocol import INT8_BLOCK, LocalProtocolError, MaskMethod, mask_bound_nbytes
from spargo.protocol.masks import decode_index_set, decode_mask, encode_index_set, encode_mask
from spargo.protocol.values import decode_values, encode_values

FAST = settings(max_examples=60, deadline=None)


@FAST
@given(
    n=st.integers(0, 5000),
    density=st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_mask_round_trips_exactly(n: int, density: float, seed: int) -> None:
    mask = np.random.default_rng(seed).random(n) < density
    wire = encode_mask(mask)
    got, k = decode_mask(wire, n)
    assert k == int(mask.sum())
    np.testing.assert_array_equal(got, mask)
    np.testing.assert_array_equal(decode_index_set(wire, n), np.flatnonzero(mask))


@pytest.mark.parametrize("density", [0.001, 0.01, 0.1, 0.5, 0.9])
def test_mask_is_within_five_percent_of_the_bound(density: float) -> None:
    n = 200_000
    mask = np.random.default_rng(3).random(n) < density
    method, k, payload = encode_mask(mask)
    assert len(payload) <= 1.05 * mask_bound_nbytes(n, k) + 2
    expected = MaskMethod.BITMAP if density == 0.5 else None
    assert expected is None or method == expected


def test_index_set_round_trips() -> None:
    indices = np.array([1, 5, 6, 999], dtype=np.int64)
    np.testing.assert_array_equal(decode_index_set(encode_index_set(indices, 1000), 1000), indices)


@FAST
@given(
    count=st.integers(0, 3 * INT8_BLOCK + 7),
    dtype=st.sampled_from(["float32", "float16", "bfloat16", "int8"]),
    scale=st.sampled_from([1e-3, 1.0, 100.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_values_round_trip_within_dtype_precision(
    count: int, dtype: str, scale: float, seed: int
) -> None:
    x = (np.random.default_rng(seed).standard_normal(count) * scale).astype(np.float32)
    wire = encode_values(x, dtype)
    wire = [bytes(f) if isinstance(f, memoryview) else f for f in wire]
    got, got_dtype = decode_values(wire, count, allow_nonfinite=False)
    assert got_dtype == dtype
    assert got.dtype == np.float32
    assert got.shape == (count,)
    if dtype == "float32":
        np.testing.assert_array_equal(got, x)
    elif dtype == "int8":
        # error at most half a quantisation step of the block's scale
        blocks = np.abs(np.pad(x, (0, -count % INT8_BLOCK)).reshape(-1, INT8_BLOCK)).max(1)
        step = np.repeat(blocks / 127, INT8_BLOCK)[:count]
        assert (np.abs(got - x) <= step / 2 + 1e-6 * np.abs(x)).all()
    else:
        rtol = 2**-11 if dtype == "float16" else 2**-8
        np.testing.assert_allclose(
            got, x, rtol=rtol, atol=scale * 1e-4 if dtype == "float16" else 0
        )


def test_float16_overflow_is_refused_on_encode() -> None:
    with pytest.raises(LocalProtocolError):
        encode_values(np.array([1e6], dtype=np.float32), "float16")


def test_bfloat16_rounds_to_nearest_even() -> None:
    x = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5], dtype=np.float32)
    wire = [bytes(f) if isinstance(f, memoryview) else f for f in encode_values(x, "bfloat16")]
    got, _ = decode_values(wire, 3, allow_nonfinite=False)
    np.testing.assert_array_equal(got, np.array([1.0, 1.0 + 4 * 2**-8, -2.5], dtype=np.float32))


def test_bound_formula() -> None:
    assert mask_bound_nbytes(10, 0) == 0
    assert math.isclose(mask_bound_nbytes(10, 5), math.log2(252) / 8)
