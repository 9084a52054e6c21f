"""Magnitude pruning: masks, schedules, fixed-mask training, merging and density."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spargo.sparse import (
    MaskedTraining,
    ThresholdConfig,
    attach_thresholds,
    cubic_schedule,
    density,
    magnitude_masks,
    mask_nbytes,
    merge_masks,
    multiplicative_schedule,
    prunable_parameters,
    set_threshold_vector,
)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_global_mask_cuts_at_the_pooled_magnitude() -> None:
    tensors = {"a": torch.tensor([0.1, -5.0, 0.3]), "b": torch.tensor([[2.0, -0.2], [0.05, 1.0]])}
    masks = magnitude_masks(tensors, density=3 / 7)
    assert masks["a"].tolist() == [False, True, False]
    assert masks["b"].tolist() == [[True, False], [False, True]]
    layer = magnitude_masks(tensors, density=0.5, scope="layer")
    assert layer["a"].tolist() == [False, True, True]  # ⌊0.5·3⌋ = 1 pruned
    assert layer["b"].tolist() == [[True, False], [False, True]]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    dens=st.floats(0.0, 1.0),
    scope=st.sampled_from(["global", "layer"]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_mask_keeps_the_exact_count(
    sizes: list[int], dens: float, scope: str, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(sum(sizes))
    tensors = {f"t{i}": torch.randn(n, generator=g).to(dtype) for i, n in enumerate(sizes)}
    masks = magnitude_masks(tensors, dens, scope)
    if scope == "global":
        total = sum(sizes)
        assert sum(int(m.sum()) for m in masks.values()) == total - math.floor(
            (1 - dens) * total + 1e-9
        )
        kept = torch.cat([tensors[k][masks[k]].abs().float() for k in tensors])
        dropped = torch.cat([tensors[k][~masks[k]].abs().float() for k in tensors])
        if kept.numel() and dropped.numel():
            assert kept.min() >= dropped.max()
    else:
        for k, t in tensors.items():
            assert int(masks[k].sum()) == t.numel() - math.floor((1 - dens) * t.numel() + 1e-9)


def test_density_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"density must lie in \[0, 1\].*fraction of weights to keep"
    ):
        magnitude_masks({"a": torch.ones(3)}, 1.2)
    with pytest.raises(ValueError, match="scope"):
        magnitude_masks({"a": torch.ones(3)}, 0.5, scope="row")


def test_cubic_schedule_known_rounds() -> None:
    assert cubic_schedule(0, 0.9, t0=2, t_end=10) == 0.0
    assert cubic_schedule(2, 0.9, t0=2, t_end=10) == 0.0
    assert cubic_schedule(6, 0.9, t0=2, t_end=10) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_schedule(10, 0.9, t0=2, t_end=10) == 0.9
    assert cubic_schedule(99, 0.9, t0=2, t_end=10) == 0.9
    # every=4: evaluated at 2, 6, 10 and held in between.
    assert cubic_schedule(5, 0.9, t0=2, t_end=10, every=4) == 0.0
    assert cubic_schedule(9, 0.9, t0=2, t_end=10, every=4) == pytest.approx(0.7875)
    values = [cubic_schedule(t, 0.8, 0, 20) for t in range(25)]
    assert values == sorted(values)
    with pytest.raises(ValueError, match="t_end"):
        cubic_schedule(1, 0.5, t0=5, t_end=2)


def test_multiplicative_schedule_known_rounds() -> None:
    assert multiplicative_schedule(0, 0.2) == 0.0
    assert multiplicative_schedule(1, 0.2) == pytest.approx(0.2)
    assert multiplicative_schedule(3, 0.2) == pytest.approx(1 - 0.8**3)
    assert multiplicative_schedule(5, 0.5, every=2) == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        multiplicative_schedule(1, -0.1)


def test_masked_training_holds_masks() -> None:
    torch.set_num_threads(1)
    model = mlp()
    params = prunable_parameters(model)
    assert list(params) == ["0.weight", "2.weight"]
    assert list(prunable_parameters(model, include_head=False)) == ["0.weight"]
    masks = magnitude_masks(params, 0.3)
    holder = MaskedTraining(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for name, p in params.items():
            assert bool((p.grad[~masks[name]] == 0).all())
        opt.step()
        holder.after_step()
        for name, p in params.items():
            assert bool((p[~masks[name]] == 0).all())
    assert density(model).param_weighted == pytest.approx(0.3, abs=0.01)
    holder.set_masks({"0.weight": torch.zeros(8, 6, dtype=torch.bool)})
    assert int(model[0].weight.count_nonzero()) == 0
    holder.remove()
    with pytest.raises(ValueError, match="prunable_parameters"):
        MaskedTraining(model, {"nope": torch.ones(1)})


def test_merge_rules_on_hand_made_masks() -> None:
    masks = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    assert merge_masks(masks, "majority").tolist() == [True, True, False, False]
    assert merge_masks(masks, "union").tolist() == [True, True, True, False]
    assert merge_masks(masks, "intersection").tolist() == [False, False, False, False]
    weights = torch.tensor([1.0, 5.0, 1.0, 1.0])
    assert merge_masks(masks, "majority", weights).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="rule"):
        merge_masks(masks, "vote")


def test_density_counts_spafl_units_and_zero_weights() -> None:
    model = mlp()
    attach_thresholds(model, ThresholdConfig(min_density=0.0))
    set_threshold_vector(model, torch.tensor([10.0] * 2 + [0.0] * 6))  # two of eight units off
    with torch.no_grad():
        model[2].weight[0, :4] = 0.0
    report = density(model)
    assert report.per_layer == {"0.weight": (36, 48), "2.weight": (20, 24)}
    assert report.param_weighted == pytest.approx(56 / 72)
    assert report.layer_mean == pytest.approx((36 / 48 + 20 / 24) / 2)
    assert density(model, include_head=False).per_layer == {"0.weight": (36, 48)}


def test_mask_nbytes_matches_the_table() -> None:
    n = 10**6
    assert mask_nbytes(n, n // 100) == pytest.approx(10_100, rel=0.01)
    assert mask_nbytes(n, n // 10) == pytest.approx(58_600, rel=0.01)
    assert 124_990 <= mask_nbytes(n, n // 2) <= 125_000
    assert mask_nbytes(n, 0) == 0
