"""Issue 13's defects, one small input each: SpaFL's async shift, warm-up and head mask, the
authors' variance correction, FedSparsify's paper schedule, the all-reduce weighting, and
reports on one declared basis with both accuracies and the averaged model's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spargo import sparse
from spargo.node.aggregation import variance_correct_exact
from spargo.node.methods import MethodContext, make_method
from spargo.node.methods.payloads import Received, ThresholdVector
from spargo.node.methods.spafl import SpaFLMethod
from spargo.sims import Scenario, run
from spargo.sims.scenario import ScenarioError


def _spafl(**options: object) -> SpaFLMethod:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    ctx = MethodContext(model, "a", {"a": 0.5, "b": 0.5}, 0, 10, dict(options))
    method = make_method("spafl", ctx)
    assert isinstance(method, SpaFLMethod)
    return method


def _weights(method: SpaFLMethod) -> np.ndarray:
    module = method.ctx.model[0]  # type: ignore[index]
    return module.parametrizations.weight.original.detach().numpy().copy()


def test_async_spafl_shifts_once_per_threshold_update_not_per_merge() -> None:
    """Two merges after one burst shift the weights by τ̄₂ − τ_start in total, as one merge
    of the same result would. Failed before the fix (each merge used τ_start: ≈ 1.4×)."""
    once, twice = _spafl(), _spafl()
    tau = sparse.threshold_vector(once.ctx.model).numpy()
    first, second = tau + 0.2, tau + 0.3
    for method in (once, twice):
        method.begin_round(0)
    # twice: row (½, ½); b sends τ + 0.2 → τ̄₁ = τ + 0.1, then τ + 0.3 → τ̄₂ = τ + 0.2
    twice.merge(0, [Received("b", ThresholdVector(first))])
    twice.merge(0, [Received("b", ThresholdVector(second))])
    final = sparse.threshold_vector(twice.ctx.model).numpy()
    once_payload = 2 * final - tau  # one merge of (τ, ·) landing on the same τ̄
    once.merge(0, [Received("b", ThresholdVector(once_payload.astype(np.float32)))])
    np.testing.assert_allclose(sparse.threshold_vector(once.ctx.model).numpy(), final, atol=1e-6)
    np.testing.assert_allclose(_weights(twice), _weights(once), atol=1e-6)


def test_spafl_warms_the_regulariser_up_as_the_authors_do() -> None:
    method = _spafl(alpha=0.5, warmup=4)
    full = float(sparse.threshold_regularizer(method.ctx.model, 0.5).detach())
    for t, factor in [(0, 1 / (1 + math.exp(5))), (2, 0.5), (4, 1.0), (9, 1.0)]:
        method.begin_round(t)
        term = method.loss_term()
        assert term is not None
        assert float(term.detach()) == pytest.approx(full * factor, rel=1e-6)
    method = _spafl(alpha=0.5, warmup=0)
    method.begin_round(0)
    assert float(method.loss_term().detach()) == pytest.approx(full)  # type: ignore[union-attr]


def test_spafl_masks_the_head_on_request() -> None:
    assert _spafl().masked_layers == ["0"]
    assert _spafl(mask_head=True).masked_layers == ["0", "2"]
    with pytest.raises(ValueError, match="warmup"):
        _spafl(warmup=-1)


# --- variance correction: the authors' exact algorithm ---------------------------------
def test_exact_correction_has_no_clamp_and_the_authors_epsilon() -> None:
    rng = np.random.default_rng(0)
    peers = rng.normal(size=(3, 50))
    mixed = peers.mean(axis=0)
    out, s = variance_correct_exact(mixed, peers, beta=0.5)
    target = 0.5 * peers[0].var(ddof=1) + 0.5 * peers[1:].var(axis=1, ddof=1).mean()
    assert s == pytest.approx(math.sqrt((target + 1e-4) / (mixed.var(ddof=1) + 1e-4)))
    assert s > math.sqrt(3) or s > 1.5  # uncorrelated: the factor is large, nothing clamps it
    assert out.var(ddof=1) == pytest.approx(target + 1e-4 - 1e-4 * s**2, rel=1e-9)
    # a shrinking factor is allowed too (spargo's rules clamp it to ≥ 1)
    _, shrink = variance_correct_exact(peers[0] * 3, peers, beta=0.5)
    assert shrink < 1


def test_vc_corrects_more_from_independent_initialisations() -> None:
    """The correction matters when models are uncorrelated (the paper's setting)."""

    def factors(distinct: bool) -> list[float]:
        result = run(Scenario(nodes=6, topology="ring", method="vc", rounds=4, eval_every=1000,
                              distinct_init=distinct, method_options={"exact": True}))  # fmt: skip
        return [
            float(np.mean([m.merge["variance_factor"] for m in result.rounds if m.round == t]))
            for t in range(4)
        ]

    same, distinct = factors(False), factors(True)
    assert all(d > s for d, s in zip(distinct, same, strict=True)), (same, distinct)
    assert distinct[0] > 1.4


# --- FedSparsify's schedule ------------------------------------------------------------
def test_fedsparsify_offers_the_papers_schedule_beside_the_cubic_ramp() -> None:
    def method(**options: object) -> object:
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        return make_method("fedsparsify", MethodContext(model, "a", {"a": 1.0}, 0, 20, options))

    paper = method(schedule="paper", prune_rate=0.2, s_final=0.9)
    want = [1 - 0.8 ** (t + 1) for t in range(10)]
    got = [paper.sparsity(t) for t in range(10)]  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, [min(w, 0.9) for w in want])
    cubic = method()
    assert cubic.sparsity(0) == 0.0  # type: ignore[attr-defined]
    assert cubic.sparsity(19) == pytest.approx(0.8)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="schedule"):
        method(schedule="linear")


# --- all-reduce weighting and the declared basis ----------------------------------------
def test_allreduce_weighting_is_explicit() -> None:
    common = {"nodes": 4, "topology": "ring", "method": "allreduce", "rounds": 2,
              "eval_every": 1000, "partition": "dirichlet:0.3"}  # fmt: skip
    equal = run(Scenario(**common)).summary  # type: ignore[arg-type]
    samples = run(Scenario(**common, method_options={"weighting": "samples"})).summary  # type: ignore[arg-type]
    assert equal["global_accuracy_mean"] != samples["global_accuracy_mean"]
    with pytest.raises(ValueError, match="weighting"):
        run(Scenario(**common, method_options={"weighting": "size"}))  # type: ignore[arg-type]


def test_summaries_report_both_bases_and_the_averaged_model() -> None:
    base = {"nodes": 4, "topology": "ring", "method": "local", "rounds": 2, "eval_every": 1000}
    glob = run(Scenario(**base)).summary  # type: ignore[arg-type]
    local = run(Scenario(**base, basis="local")).summary  # type: ignore[arg-type]
    assert glob["accuracy_on"] == "global"
    assert local["accuracy_on"] == "local"
    assert glob["accuracy_mean"] == glob["global_accuracy_mean"]
    assert local["accuracy_mean"] == local["local_accuracy_mean"]
    assert glob["bytes_sent_total"] < 1000  # local: Hello and Bye only, no model
    assert 0 < glob["averaged_model_accuracy"] <= 1
    with pytest.raises(ScenarioError, match="basis"):
        Scenario(basis="mean")


def test_tables_show_both_bases_and_star_the_declared_one(tmp_path: Path) -> None:
    from rich.console import Console

    from spargo.sims.report import summary_table
    from spargo.sims.sweep import write_tables

    rows = [
        {"name": "a", "method": "spafl", "accuracy_on": "global", "accuracy_mean": 0.81,
         "global_accuracy_mean": 0.81, "local_accuracy_mean": 0.93,
         "averaged_model_accuracy": 0.44, "density": 0.4, "bytes_sent_total": 10**6},
        {"name": "b", "method": "local", "accuracy_on": "global", "accuracy_mean": 0.78,
         "global_accuracy_mean": 0.78, "local_accuracy_mean": 0.95,
         "averaged_model_accuracy": 0.85, "density": 1.0, "bytes_sent_total": 0},
    ]  # fmt: skip
    console = Console(width=80, record=True)
    console.print(summary_table(rows[:1]))
    one = console.export_text()
    for text in ("global*", "local", "averaged", "0.930", "0.440"):
        assert text in one
    assert all(len(line) <= 80 for line in one.splitlines())
    write_tables(rows, tmp_path)
    header = (tmp_path / "sweep.csv").read_text().splitlines()[0].split(",")
    for column in ("accuracy_on", "global_accuracy_mean", "local_accuracy_mean",
                   "averaged_model_accuracy"):  # fmt: skip
        assert column in header
    assert "0.93" in (tmp_path / "sweep.md").read_text()
