"""The batched engine's own parts: the local reference, sampled evaluation, batched variance
correction against ``node.aggregation``, the model check and its one-line errors."""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from spargo.node.aggregation import variance_correct
from spargo.node.tasks import load_task
from spargo.node.training import LocalTrainer, TrainConfig
from spargo.sims import run
from spargo.sims.batched_mix import Edges, variance_correct_all
from spargo.sims.data import peer_data
from spargo.sims.scenario import Scenario, ScenarioError
from tests.sims.conftest import assert_one_line_error, small


def test_local_is_each_peer_training_alone_with_the_node_trainer() -> None:
    scenario = small(method="local", engine="batched", rounds=3, partition="dirichlet:0.5")
    result = run(scenario)
    task = load_task(scenario.task, seed=scenario.seed)
    data = peer_data(task.train, task.test, 8, scenario.partition, scenario.seed)
    config = TrainConfig(scenario.local_steps, scenario.batch_size, scenario.lr, scenario.momentum)
    got = {(m.peer_id, m.round): m for m in result.rounds}
    for index, shard in enumerate(data):
        model = task.model_factory(scenario.seed)
        trainer = LocalTrainer(model, shard.train, config, seed=scenario.seed * 100_003 + index)
        for r in range(scenario.rounds):
            loss = trainer.train_round(r)
            record = got[(f"p{index}", r)]
            assert abs(record.loss - loss) <= 1e-5
            assert abs(record.accuracy - trainer.evaluate(shard.test)[1]) <= 1e-5
            assert abs(record.global_accuracy - trainer.evaluate(task.test)[1]) <= 1e-5
    assert result.summary["messages_sent"] == 2 * 8 * 2  # a hello and a bye per ring link
    assert result.summary["merges"] == 0


def test_sampled_evaluation_reports_who_was_evaluated() -> None:
    result = run(small(engine="batched", eval_peers=3, rounds=4, method="dense"))
    rows = result.round_stats
    assert [row["evaluated_peers"] for row in rows] == [3, 3, 3, 3]
    by_round = result.by_round()
    for row in rows:
        measured = [m.peer_id for m in by_round[row["round"]] if not math.isnan(m.accuracy)]
        assert sorted(measured) == row["evaluated"]
    assert len({tuple(row["evaluated"]) for row in rows}) > 1  # a fresh draw each round
    finals = [m.global_accuracy for m in result.rounds if m.round == 3]
    sampled = [a for a in finals if not math.isnan(a)]
    assert result.summary["accuracy_mean"] == pytest.approx(np.mean(sampled), abs=1e-6)
    assert result.summary["eval_peers"] == 3
    again = run(small(engine="batched", eval_peers=3, rounds=4, method="dense"))
    assert again.round_stats == rows  # the same seed, the same sample


def test_every_peer_is_evaluated_every_k_rounds_when_asked() -> None:
    result = run(small(engine="batched", eval_peers=3, eval_all_every=2, rounds=5))
    assert [row["evaluated_peers"] for row in result.round_stats] == [3, 8, 3, 8, 8]
    assert "evaluated" not in result.round_stats[1]


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_batched_variance_correction_equals_the_node_function(beta: float) -> None:
    rng = np.random.default_rng(3)
    n = 7
    receiver = np.array([0, 0, 1, 2, 2, 2, 4, 5])
    sender = np.array([1, 3, 0, 1, 4, 6, 2, 6])
    edges = Edges(receiver, sender, n)
    own = rng.normal(0.0, rng.uniform(0.2, 2.0, size=(n, 1, 1)), size=(n, 3, 4))
    own = own.astype(np.float32)
    weights = rng.uniform(0.1, 0.3, size=len(receiver))
    diagonal = 1.0 - np.bincount(receiver, weights, minlength=n)
    mixed = own.copy()
    for i in range(n):
        chosen = sender[receiver == i]
        w = np.concatenate([[diagonal[i]], weights[receiver == i]])
        mixed[i] = np.tensordot(w, own[[i, *chosen]].astype(np.float64), axes=1)
    out, scale = variance_correct_all(
        torch.as_tensor(mixed), torch.as_tensor(own), edges, (weights, diagonal), beta
    )
    for i in range(n):
        chosen = sender[receiver == i]
        if not len(chosen):
            assert scale[i] == 1.0
            assert np.array_equal(out[i].numpy(), mixed[i])
            continue
        w = np.concatenate([[diagonal[i]], weights[receiver == i]])
        n_eff = float(w.sum() ** 2 / np.square(w).sum())
        expected, factor = variance_correct(mixed[i], own[[i, *chosen]], beta=beta, n_eff=n_eff)
        assert scale[i] == pytest.approx(factor, rel=1e-12)
        np.testing.assert_allclose(out[i].numpy(), expected, rtol=1e-6, atol=1e-7)
    assert (scale > 1.0).any()


def _conv_task(seed: int = 0) -> Any:
    from spargo.node.tasks import TaskSpec

    base = load_task("synthetic", seed)

    def factory(model_seed: int) -> nn.Module:
        torch.manual_seed(model_seed)
        return nn.Sequential(nn.Unflatten(1, (1, 20)), nn.Conv1d(1, 2, 3), nn.Flatten())

    return TaskSpec("conv", base.train, base.test, 4, factory)


def test_a_model_that_is_not_an_mlp_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("batched_conv_task")
    module.task = _conv_task  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "batched_conv_task", module)
    with pytest.raises(ScenarioError, match="Unflatten; use --engine node"):
        run(small(engine="batched", task="batched_conv_task:task"))


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"engine": "gpu"}, "--engine 'gpu' is unknown; use node or batched"),
        ({"eval_peers": 4}, "--eval-peers needs --engine batched"),
        ({"engine": "batched", "eval_peers": -1}, "--eval-peers must be a whole number >= 0"),
        ({"engine": "batched", "eval_all_every": 2}, "--eval-all-every needs --eval-peers K"),
        ({"engine": "batched", "method": "bogus"}, "--method 'bogus' is unknown"),
        (
            {"engine": "batched", "method": "spafl", "method_options": {"weights_every": -1}},
            "spafl option weights_every must be >= 0",
        ),
        (
            {"engine": "batched", "method": "fedsparsify", "method_options": {"scope": "x"}},
            "fedsparsify option scope must be 'global' or 'layer'",
        ),
        (
            {"engine": "batched", "method": "choco", "sampler": "random:1"},
            "choco with --sampler all only",
        ),
        (
            {"engine": "batched", "method": "choco", "method_options": {"ratio": 2}},
            "choco option ratio must lie in (0, 1]",
        ),
        (
            {"engine": "batched", "churn": 0.1, "loss": 0.1},
            "--engine batched runs churn without --loss (its churn has no deadlines",
        ),
        (
            {"engine": "batched", "method": "choco", "churn": 0.1},
            "--engine batched runs choco without churn",
        ),
        (
            {"engine": "batched", "attack": "signflip", "attackers": 0.25},
            "not attacks; --attack needs --engine node",
        ),
        ({"engine": "batched", "latency_ms": 5.0}, "--latency-ms needs --engine node"),
        *(
            (
                {"engine": "batched", "method": method, "churn": 0.1},
                f"--engine batched runs {method} without churn (a leaving peer's",
            )
            for method in ("pushsum_rs", "tracking", "cgt", "cgt_masked")
        ),
        ({"engine": "batched", "mode": "async"}, "--mode rounds only"),
        (
            {"engine": "batched", "method": "cgt", "sampler": "random:1"},
            "--engine batched runs cgt with --sampler all only (not 'random:1')",
        ),
        (
            {"engine": "batched", "method_options": {"mix": "pushsum"}},
            "dense option mix=pushsum is a method of its own now: use method pushsum",
        ),
        (
            {"engine": "batched", "method_options": {"robust": "median"}},
            "--engine batched runs dense with robust=none only, not 'median'",
        ),
        (
            {"engine": "batched", "method": "pushsum", "method_options": {"mix": "mh"}},
            "method 'pushsum' has no option 'mix'; valid: none",
        ),
        (
            {"engine": "batched", "method": "allreduce", "method_options": {"x": 1}},
            "method 'allreduce' has no option 'x'",
        ),
        (
            {"engine": "batched", "method": "spafl", "method_options": {"alpha": -1}},
            "alpha",
        ),
        (
            {"engine": "batched", "method": "local", "method_options": {"x": 1}},
            "method 'local' has no option 'x'",
        ),
        (
            {"engine": "batched", "method": "allreduce", "method_options": {"weighting": "x"}},
            "allreduce option weighting='x' is unknown",
        ),
        (
            {"engine": "batched", "method": "choco", "method_options": {"gamma": "fast"}},
            "choco option gamma=fast must be auto or lie in (0, 1]",
        ),
    ],
)
def test_what_the_batched_engine_cannot_run_is_a_scenario_error(
    fields: dict[str, Any], needle: str
) -> None:
    values: dict[str, Any] = {"method": "dense", "method_options": {}, **fields}
    with pytest.raises(ScenarioError) as caught:
        Scenario(**values)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cli_runs_the_batched_engine_and_rejects_what_it_cannot(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from spargo.cli import main

    argv = ["sim", "--engine", "batched", "--method", "vc", "--nodes", "8", "--rounds", "2"]
    argv += ["--task", "synthetic", "--topology", "ring", "--eval-peers", "4", "--quiet"]
    assert main([*argv, "--json", "--no-plots", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()  # with --json the summary line goes to stderr
    assert "; a sample of 4 peers)" in captured.err.strip().splitlines()[-1]
    last = captured.out.strip().splitlines()[-1]
    assert '"engine": "batched"' in last
    assert '"eval_peers": 4' in last
    assert_one_line_error(
        ["--engine", "batched", "--latency-ms", "5"],
        "--engine batched runs loss, partitions, churn and device speeds, not link delays; "
        "--latency-ms needs --engine node",
        lambda: capsys.readouterr().err,
    )


def test_a_method_the_batched_engine_lacks_is_named_with_the_supported_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every node method runs batched today; a method added to the node later must not fall
    # back silently. Simulate one by taking ``vc`` off the batched engine's list.
    import spargo.sims.batched_check as batched_check

    monkeypatch.setattr(batched_check, "BATCHED_METHODS", ("dense", "local"))
    with pytest.raises(ScenarioError) as caught:
        Scenario(method="vc", method_options={}, engine="batched")
    assert str(caught.value) == (
        "--engine batched runs methods dense, local; not 'vc': use --engine node"
    )


@pytest.mark.parametrize("method", ["dense", "spafl", "fedsparsify"])
def test_training_in_peer_chunks_changes_nothing(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spargo.sims.batched_model as model

    options = {"spafl": {"weights_every": 2, "alpha": 2.0}}.get(method, {})
    scenario = small(engine="batched", method=method, method_options=options, rounds=3)
    whole = run(scenario)
    monkeypatch.setattr(model, "TRAIN_CHUNK_PEERS", 3)  # 8 peers: chunks of 3, 3 and 2
    chunked = run(scenario)
    assert [(m.loss, m.accuracy, m.density) for m in chunked.rounds] == [
        (m.loss, m.accuracy, m.density) for m in whole.rounds
    ]


def test_a_stop_ends_the_run_between_rounds_and_the_callbacks_see_every_round() -> None:
    from spargo.sims.runner import StopFlag

    stop = StopFlag()
    rows: list[dict[str, Any]] = []
    records: list[Any] = []

    def on_round(round_index: int, metrics: list[Any]) -> None:
        assert rows[-1]["round"] == round_index
        assert len(metrics) == 8
        if round_index == 1:
            stop.request()

    scenario = small(engine="batched", rounds=5)
    result = run(
        scenario, on_round=on_round, on_row=rows.append, on_record=records.append, stop=stop
    )
    assert result.summary["interrupted"] is True
    assert result.summary["rounds_done"] == 2 == len(rows)
    assert [m.round for m in records] == [0] * 8 + [1] * 8
    whole = run(scenario)
    assert whole.summary["interrupted"] is False
    assert whole.summary["rounds_done"] == 5
