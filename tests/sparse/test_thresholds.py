"""SpaFL thresholds: the straight-through gradients, masking, regulariser, floor and lifecycle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spargo.sparse import (
    SparseError,
    ThresholdConfig,
    apply_global_importance,
    attach_thresholds,
    density,
    make_permanent,
    set_threshold_vector,
    threshold_parameters,
    threshold_regularizer,
    threshold_vector,
    unit_masks,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))


def convnet(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def _check_gradients(layer: nn.Module, x: torch.Tensor) -> None:
    tau = threshold_parameters(layer)[0]
    w = layer.parametrizations.weight.original
    w_hat = layer.weight
    w_hat.retain_grad()
    out = torch.nn.functional.linear(x, w_hat) if isinstance(layer, nn.Linear) else None
    if out is None:
        out = torch.nn.functional.conv2d(x, w_hat)
    loss = (out.sin() * torch.arange(out.numel()).view_as(out).cos()).sum()
    loss.backward()
    g = w_hat.grad.flatten(1)
    wf = w.detach().flatten(1)
    m = unit_masks(layer)[""].to(wf.dtype)
    n = wf.shape[1]
    gw = (g * wf).sum(dim=1)
    torch.testing.assert_close(tau.grad, -gw)
    expected = m[:, None] * g + gw[:, None] * torch.sign(wf) / n
    torch.testing.assert_close(w.grad.flatten(1), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_linear_gradients_match_the_analytic_formula(device: str) -> None:
    torch.manual_seed(1)
    layer = nn.Linear(7, 5).to(device, torch.float64)
    attach_thresholds(layer, ThresholdConfig(mask_head=True, min_density=0.0))
    # Threshold two units off so both branches (m = 0 and m = 1) are exercised.
    mean_abs = layer.parametrizations.weight.original.detach().abs().mean(dim=1)
    set_threshold_vector(layer, (mean_abs * torch.tensor([2, 0, 2, 0.5, 0], device=device)).cpu())
    assert unit_masks(layer)[""].tolist() == [False, True, False, True, True]
    _check_gradients(layer, torch.randn(4, 7, device=device, dtype=torch.float64))


def test_conv_gradients_match_the_analytic_formula() -> None:
    torch.manual_seed(2)
    layer = nn.Conv2d(3, 4, 3, bias=False).double()
    attach_thresholds(layer, ThresholdConfig(layers=("",), min_density=0.0))
    set_threshold_vector(layer, torch.tensor([0.0, 10.0, 0.0, 10.0]))
    _check_gradients(layer, torch.randn(2, 3, 6, 6, dtype=torch.float64))


def test_masked_forward_equals_explicit_mask_multiply() -> None:
    model = mlp()
    names = attach_thresholds(model, ThresholdConfig())
    assert names == ["0", "2"]
    set_threshold_vector(model, torch.linspace(-0.2, 0.6, 13))
    x = torch.randn(9, 6)
    masks = unit_masks(model)
    expected = x
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            w = layer.parametrizations.weight.original if str(i) in masks else layer.weight
            if str(i) in masks:
                w = w * masks[str(i)][:, None]
            expected = torch.nn.functional.linear(expected, w, layer.bias)
        else:
            expected = layer(expected)
    torch.testing.assert_close(model(x), expected)
    assert masks["0"].sum() < 8  # some units really are off


def test_pruned_unit_recovers() -> None:
    torch.manual_seed(3)
    layer = nn.Linear(4, 2, bias=False)
    true_w = torch.randn(2, 4)
    with torch.no_grad():
        layer.weight.copy_(true_w)
    attach_thresholds(layer, ThresholdConfig(mask_head=True, min_density=0.0))
    set_threshold_vector(layer, torch.tensor([true_w[0].abs().mean() + 0.3, 0.0]))
    assert unit_masks(layer)[""].tolist() == [False, True]
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    x = torch.randn(64, 4)
    y = x @ true_w.T
    first = True
    for _ in range(200):
        opt.zero_grad()
        loss = ((layer(x) - y) ** 2).mean()
        loss.backward()
        if first:  # the pruned unit's weights still learn through the STE term
            assert layer.parametrizations.weight.original.grad[0].abs().sum() > 0
            first = False
        opt.step()
    assert unit_masks(layer)[""].tolist() == [True, True]


def _synthetic(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=g) * 2
    labels = torch.randint(0, 4, (512,), generator=g)
    return centres[labels] + torch.randn(512, 16, generator=g), labels


def _train(model: nn.Module, alpha: float, epochs: int) -> list[float]:
    torch.set_num_threads(1)
    x, y = _synthetic(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = []
    for _ in range(epochs):
        for i in range(0, 512, 64):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            (loss + threshold_regularizer(model, alpha)).backward()
            opt.step()
        history.append(density(model, include_head=False).param_weighted)
        for name, mask in unit_masks(model).items():
            floor = 4 if name == "0" else 3  # ceil(0.1·32) and ceil(0.1·24)
            assert int(mask.sum()) >= floor
    return history


def _task_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 4)
    )


def test_alpha_positive_density_falls_and_respects_the_floor() -> None:
    model = _task_model()
    attach_thresholds(model, ThresholdConfig(alpha=0.05, min_density=0.1))
    history = _train(model, 0.05, 6)
    assert history[-1] < 0.9
    # A huge α drives every layer down to exactly its floor, never below.
    _train(model, 50.0, 2)
    masks = unit_masks(model)
    assert int(masks["0"].sum()) == 4
    assert int(masks["2"].sum()) == 3


def test_alpha_zero_keeps_full_density_on_a_fresh_model() -> None:
    model = _task_model()
    attach_thresholds(model, ThresholdConfig())
    assert density(model).param_weighted == 1.0
    history = _train(model, 0.0, 2)
    assert history == [1.0, 1.0]


def test_threshold_vector_round_trip_and_state_dict() -> None:
    model = convnet()
    attach_thresholds(model, ThresholdConfig(mask_head=True))
    vec = threshold_vector(model)
    assert vec.dtype == torch.float32
    assert vec.device.type == "cpu"
    assert vec.shape == (7,)
    set_threshold_vector(model, torch.arange(7.0))
    assert threshold_vector(model).tolist() == list(range(7))
    keys = [k for k in model.state_dict() if k.endswith("tau")]
    assert len(keys) == 2
    assert sum(p.numel() for p in threshold_parameters(model)) == 7
    assert {id(p) for p in threshold_parameters(model)} <= {id(p) for p in model.parameters()}
    with pytest.raises(ValueError, match="flat vector of 7"):
        set_threshold_vector(model, torch.zeros(6))


def test_regularizer_value() -> None:
    model = mlp()
    attach_thresholds(model, ThresholdConfig())
    set_threshold_vector(model, torch.linspace(0, 1, 13))
    expected = 0.3 * torch.exp(-torch.linspace(0, 1, 13)).sum()
    torch.testing.assert_close(threshold_regularizer(model, 0.3), expected)
    with pytest.raises(ValueError, match=">= 0"):
        threshold_regularizer(model, -1.0)


def test_global_importance_update_matches_formula() -> None:
    model = convnet()
    attach_thresholds(model, ThresholdConfig(mask_head=True))
    conv_w = model[0].parametrizations.weight.original.detach().clone()
    fc_w = model[4].parametrizations.weight.original.detach().clone()
    delta = torch.randn(7)
    apply_global_importance(model, delta)
    s_conv = torch.sign(conv_w.flatten(1).sum(1))
    exp_conv = conv_w - (s_conv * delta[:4] / 9).view(-1, 1, 1, 1)
    s_fc = torch.sign(fc_w.sum(1))
    exp_fc = fc_w - (s_fc * delta[4:] / 64)[:, None]
    torch.testing.assert_close(model[0].parametrizations.weight.original, exp_conv)
    torch.testing.assert_close(model[4].parametrizations.weight.original, exp_fc)


def test_make_permanent_bakes_masks_and_removes_thresholds() -> None:
    model = mlp()
    attach_thresholds(model, ThresholdConfig())
    set_threshold_vector(model, torch.linspace(-0.2, 0.6, 13))
    x = torch.randn(5, 6)
    before = model(x).detach()
    report = density(model)
    make_permanent(model)
    torch.testing.assert_close(model(x), before)
    assert threshold_parameters(model) == []
    assert not any("tau" in k or "original" in k for k in model.state_dict())
    assert density(model) == report


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="alpha must be"):
        ThresholdConfig(alpha=-0.1)
    with pytest.raises(ValueError, match=r"min_density must lie in \[0, 1\]"):
        ThresholdConfig(min_density=1.5)
    model = convnet()
    with pytest.raises(TypeError, match=r"BatchNorm2d.*only nn.Linear and nn.Conv2d") as info:
        attach_thresholds(model, ThresholdConfig(layers=("1",)))
    assert isinstance(info.value, SparseError)
    with pytest.raises(ValueError, match="no module named 'nope'"):
        attach_thresholds(model, ThresholdConfig(layers=("nope",)))
    attach_thresholds(model, ThresholdConfig())
    with pytest.raises(ValueError, match="make_permanent"):
        attach_thresholds(model, ThresholdConfig())


def test_default_layer_choice_leaves_head_and_norms_unmasked() -> None:
    model = convnet()
    assert attach_thresholds(model, ThresholdConfig()) == ["0"]
    other = convnet()
    assert attach_thresholds(other, ThresholdConfig(mask_head=True)) == ["0", "4"]
