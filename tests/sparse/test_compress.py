"""Compressors: top-k, shared-seed rand-k, casts, int8 blocks and exact error feedback."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spargo.sparse import (
    Compressed,
    CompressorSpec,
    ErrorFeedback,
    cast,
    compress,
    decompress,
    dequantize_int8,
    error_feedback_step,
    quantize_int8,
    randk,
    randk_indices,
    topk,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHAPES = st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple)


def test_topk_picks_largest_magnitudes_sorted_by_index() -> None:
    x = torch.tensor([[0.1, -3.0], [2.0, 0.5]])
    idx, values = topk(x, 2)
    assert idx.dtype == torch.int64
    assert idx.tolist() == [1, 2]
    assert values.tolist() == [-3.0, 2.0]
    with pytest.raises(ValueError, match=r"k must be an integer in \[0, 4\]"):
        topk(x, 5)


def test_randk_same_seed_same_indices_on_two_peers() -> None:
    peer_a = torch.randn(1000)
    peer_b = torch.randn(1000)
    idx_a, _ = randk(peer_a, 37, seed=42)
    idx_b, _ = randk(peer_b, 37, seed=42)
    assert torch.equal(idx_a, idx_b)
    assert torch.equal(idx_a, randk_indices(1000, 37, 42))
    assert idx_a.unique().numel() == 37
    assert bool((idx_a[1:] > idx_a[:-1]).all())
    assert not torch.equal(idx_a, randk_indices(1000, 37, 43))


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, dtype=st.sampled_from(["float16", "bfloat16", "float32"]))
def test_cast_is_what_the_receiver_sees(shape: tuple[int, ...], dtype: str) -> None:
    x = torch.randn(shape)
    y = cast(x, dtype)
    assert y.dtype == x.dtype
    assert y.shape == x.shape
    target = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    assert torch.equal(y, x.to(target).float())


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 700),
    block=st.sampled_from([1, 7, 64, 256]),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
)
def test_int8_error_within_one_step(n: int, block: int, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * scale
    q, scales = quantize_int8(x, block)
    assert q.dtype == torch.int8
    assert scales.dtype == torch.float32
    assert scales.numel() == math.ceil(n / block)
    y = dequantize_int8(q, scales, n, block)
    step = scales.repeat_interleave(block)[:n]
    assert bool(((y - x).abs() <= step * 0.5 * (1 + 1e-5) + 1e-30).all())
    qs, ss = quantize_int8(x, block, stochastic=True, generator=g)
    ys = dequantize_int8(qs, ss, n, block)
    assert bool(((ys - x).abs() <= step * (1 + 1e-5) + 1e-30).all())


def test_int8_stochastic_rounding_is_unbiased() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([1.0, 0.3, -0.55, 0.01] * 64)  # scale = 1/127 per block
    total = torch.zeros_like(x)
    trials = 2000
    for _ in range(trials):
        q, s = quantize_int8(x, 256, stochastic=True, generator=g)
        total += dequantize_int8(q, s, x.numel(), 256)
    step = 1.0 / 127
    # Std of the mean of a Bernoulli·step rounding is at most step / (2·√trials).
    assert bool(((total / trials - x).abs() < 5 * step / (2 * math.sqrt(trials))).all())
    with pytest.raises(ValueError, match="Generator"):
        quantize_int8(x, stochastic=True)


def test_int8_zero_block() -> None:
    q, s = quantize_int8(torch.zeros(10), 4)
    assert q.tolist() == [0] * 10
    assert s.tolist() == [0.0] * 3
    assert dequantize_int8(q, s, 10, 4).tolist() == [0.0] * 10


SPECS = st.builds(
    CompressorSpec,
    kind=st.sampled_from(["topk", "randk", "none"]),
    ratio=st.floats(0.01, 1.0),
    value_dtype=st.sampled_from(["float32", "float16", "bfloat16", "int8"]),
    block=st.sampled_from([3, 64, 256]),
)


@settings(max_examples=100, deadline=None)
@given(shape=SHAPES, spec=SPECS, seed=st.integers(0, 2**40), scale=st.floats(1e-4, 1e4))
def test_error_feedback_conserves_exactly(
    shape: tuple[int, ...], spec: CompressorSpec, seed: int, scale: float
) -> None:
    g = torch.Generator().manual_seed(seed % 2**31)
    x = torch.randn(shape, generator=g) * scale
    residual = torch.randn(shape, generator=g) * scale * 0.1
    c, new_residual = error_feedback_step(x, residual, spec, seed)
    sent = decompress(c, shape)
    assert torch.equal(sent + new_residual, x + residual)
    n = math.prod(shape)
    k = n if spec.kind == "none" else math.ceil(spec.ratio * n - 1e-9)
    assert c.values.numel() == k
    assert c.numel == n
    assert (c.indices is not None) == (spec.kind == "topk")
    assert (c.seed is not None) == (spec.kind == "randk")


def test_error_feedback_over_rounds_sends_everything_eventually() -> None:
    spec = CompressorSpec("topk", 0.1, "float16")
    x = torch.randn(100)
    residual = torch.zeros(100)
    total_sent = torch.zeros(100)
    for r in range(30):
        c, residual = error_feedback_step(x, residual, spec, seed=r)
        total_sent += decompress(c, (100,))
    # Σ sent + e_T = T·x exactly in exact arithmetic: the residual stays bounded.
    torch.testing.assert_close(total_sent + residual, 30 * x, rtol=1e-5, atol=1e-4)
    assert residual.abs().max() < 30 * x.abs().max() / 3


def test_stochastic_int8_spec_is_seeded() -> None:
    spec = CompressorSpec("none", 1.0, "int8", stochastic_rounding=True)
    x = torch.randn(300)
    a, b = compress(x, spec, seed=5), compress(x, spec, seed=5)
    assert torch.equal(a.values, b.values)
    assert a.scales is not None
    assert a.values.dtype == torch.int8


def test_compressed_values_are_in_wire_precision() -> None:
    x = torch.randn(50)
    c = compress(x, CompressorSpec("randk", 0.2, "bfloat16"), seed=3)
    assert c.values.dtype == torch.bfloat16
    assert c.indices is None
    assert c.seed == 3
    assert c.payload_nbytes() == 10 * 2 + 8
    dense = decompress(c, (5, 10))
    assert dense.shape == (5, 10)
    assert int(dense.count_nonzero()) <= 10
    rebuilt = Compressed(None, 3, c.values, 50)
    assert torch.equal(decompress(rebuilt, (50,)), dense.view(-1))


def test_fp16_saturates_instead_of_sending_inf() -> None:
    x = torch.tensor([1e6, -1e6, 1.0])
    c, residual = error_feedback_step(x, torch.zeros(3), CompressorSpec(value_dtype="float16"))
    assert bool(torch.isfinite(c.values).all())
    assert torch.equal(decompress(c, (3,)) + residual, x)


def test_bad_specs() -> None:
    with pytest.raises(ValueError, match="kind"):
        CompressorSpec("sparse", 0.1, "float32")
    with pytest.raises(ValueError, match=r"ratio must lie in \(0, 1\]"):
        CompressorSpec("topk", 0.0, "float32")
    with pytest.raises(ValueError, match="dtype"):
        CompressorSpec("topk", 0.1, "int4")
    with pytest.raises(ValueError, match="residual shape"):
        error_feedback_step(torch.zeros(3), torch.zeros(4), CompressorSpec())
    with pytest.raises(ValueError, match="seed"):
        randk_indices(10, 3, -1)


@pytest.mark.parametrize("device", DEVICES)
def test_compressors_follow_the_tensor_device(device: str) -> None:
    x = torch.randn(40, device=device)
    for kind in ("topk", "randk", "none"):
        for dtype in ("float32", "float16", "int8"):
            spec = CompressorSpec(kind, 0.25, dtype, stochastic_rounding=dtype == "int8")
            c, residual = error_feedback_step(x, torch.zeros_like(x), spec, seed=9)
            assert residual.device == x.device
            assert decompress(c, (40,)).device == x.device


def test_error_feedback_state_survives_a_checkpoint() -> None:
    spec = CompressorSpec("topk", 0.2, "float32")
    x = torch.randn(20)
    ef = ErrorFeedback()
    ef.step("w", x, spec)
    state = ef.state_dict()
    restored = ErrorFeedback()
    restored.load_state_dict(state)
    a, b = ef.step("w", x, spec), restored.step("w", x, spec)
    assert torch.equal(a.values, b.values)
    assert torch.equal(ef.residual("w"), restored.residual("w"))
    # Σ sent over both rounds + residual == 2x (top-k float32 is exact).
    first = decompress(compress(x, spec), (20,))
    torch.testing.assert_close(first + decompress(a, (20,)) + ef.residual("w"), 2 * x)
