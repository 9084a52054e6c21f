"""Experiment trackers: what TensorBoard and MLflow hold after a run, read back with their
own readers (``EventAccumulator``, ``MlflowClient``): every round's scalars, the scenario as
hyper-parameters, the run's status, also for interrupted runs, CLI runs and sweep cells."""

from __future__ import annotations

import math
import pickle
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from spargo.node.metrics import RoundMetrics
from spargo.sims.runner import SimResult, run
from spargo.sims.trackers import (
    Feed,
    MlflowTracker,
    TensorBoardTracker,
    Trackers,
    TrackerSpec,
    round_scalars,
    scenario_params,
)
from tests.sims.conftest import assert_one_line_error, small

FAST = ["--nodes", "4", "--topology", "ring", "--method", "dense", "--task", "synthetic"]
FAST += ["--rounds", "2", "--local-steps", "2", "--quiet", "--no-plots"]


# --- readers: the libraries' own ---------------------------------------------------------
def tb_read(path: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path))
    events.Reload()
    return events


def tb_hparams(events: Any) -> tuple[dict[str, Any], str]:
    """(hyper-parameters, session end status) of one TensorBoard run."""
    from tensorboard.plugins.hparams import api_pb2, metadata

    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    params = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    end = content.get(metadata.SESSION_END_INFO_TAG)
    status = "" if end is None else metadata.parse_session_end_info_plugin_data(end).status
    return params, "" if status == "" else api_pb2.Status.Name(status)


def tb_series(events: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def ml_client(uri: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store opt-in
    return MlflowClient(tracking_uri=uri)


def ml_runs(client: Any, experiment: str) -> dict[str, Any]:
    """Runs of ``experiment`` by run name."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


def ml_series(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


class Recorder:
    """A tracker that keeps what it is given (any object with start/log/close is one)."""

    def __init__(self) -> None:
        self.name = ""
        self.params: Mapping[str, Any] = {}
        self.logs: list[tuple[int, dict[str, float]]] = []
        self.statuses: list[str] = []

    def start(self, run_name: str, params: Mapping[str, Any]) -> None:
        self.name, self.params = run_name, params

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self.logs.append((step, dict(scalars)))

    def close(self, status: str = "FINISHED") -> None:
        self.statuses.append(status)


# --- one tracked run, read back by both readers ------------------------------------------
@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimResult, Path, Any, Recorder]:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tracked")
    scenario = small(nodes=6, rounds=3, local_steps=2, method="vc", method_options={"beta": 0.25})
    recorder = Recorder()
    with TensorBoardTracker(root / "tb") as tb, MlflowTracker(root / "mlruns") as ml:
        result = run(scenario, trackers=[tb, ml, recorder])
    assert tb.path == root / "tb" / scenario.label
    return result, tb.path, ml.uri, recorder


def test_any_object_with_start_log_close_is_a_tracker(
    tracked: tuple[SimResult, Path, Any, Recorder],
) -> None:
    result, _, _, recorder = tracked
    assert recorder.name == result.scenario.label
    assert recorder.params["method"] == "vc"
    assert [step for step, _ in recorder.logs] == [0, 1, 2, 2]  # the rounds, then the summary
    assert recorder.logs[-1][1]["summary/accuracy_mean"] == result.summary["accuracy_mean"]
    assert recorder.statuses == ["FINISHED"]


def _expected(row: Mapping[str, Any]) -> dict[str, float]:
    """What the trackers must hold for one round_stats row (a 'global' basis method)."""
    return {
        "accuracy/global_mean": row["global_accuracy_mean"],
        "accuracy/global_min": row["accuracy_min"],
        "traffic/mb_sent": row["bytes_sent_total"] / 1e6,
        "density/mean": row["density"],
        "consensus/distance": row["consensus_distance"],
        "swarm/peers": row["peers"],
    }


def test_tensorboard_holds_every_round_the_scenario_and_the_status(
    tracked: tuple[SimResult, Path, Any, Recorder],
) -> None:
    result, path, _, _ = tracked
    events = tb_read(path)
    rows = result.round_stats
    assert [s for s, _ in tb_series(events, "accuracy/local_mean")] == [0, 1, 2]
    for tag in ("loss/train_mean", "drops/total", "accuracy/local_min", "time/simulated_s"):
        assert len(tb_series(events, tag)) == 3, tag
    for row in rows:
        for tag, want in _expected(row).items():
            got = dict(tb_series(events, tag))[row["round"]]
            assert got == pytest.approx(want, rel=1e-6, abs=1e-6), tag  # float32 in events
    summary = dict(tb_series(events, "summary/accuracy_mean"))
    assert list(summary.values()) == [pytest.approx(result.summary["accuracy_mean"], rel=1e-6)]
    params, status = tb_hparams(events)
    assert status == "STATUS_SUCCESS"
    assert (params["nodes"], params["method"], params["consensus"]) == (6, "vc", True)
    assert params["method_options.beta"] == 0.25
    assert params["partition_groups"] == "[]"
    assert "attack" not in params  # None: unset, left out


def test_mlflow_holds_every_round_the_scenario_and_the_status(
    tracked: tuple[SimResult, Path, Any, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _, uri, _ = tracked
    client = ml_client(uri, monkeypatch)
    runs = ml_runs(client, "spargo")
    assert list(runs) == [result.scenario.label]
    found = runs[result.scenario.label]
    assert found.info.status == "FINISHED"
    run_id = found.info.run_id
    for row in result.round_stats:
        for key, want in _expected(row).items():
            got = dict(ml_series(client, run_id, key))[row["round"]]
            assert got == pytest.approx(want, abs=1e-6), key
    assert [s for s, _ in ml_series(client, run_id, "loss/train_mean")] == [0, 1, 2]
    params = found.data.params
    assert (params["nodes"], params["method"], params["lr"]) == ("6", "vc", "0.05")
    assert params["method_options.beta"] == "0.25"
    metrics = found.data.metrics
    assert metrics["summary/bytes_sent_total"] == result.summary["bytes_sent_total"]
    assert "summary/nodes" not in metrics  # a number that repeats the scenario is a param


def _interrupt_after_round_0(trackers: Trackers) -> None:
    """What Ctrl-C does to a run: a round is logged, then KeyboardInterrupt leaves ``with``."""
    result = run(small(nodes=4, rounds=1, local_steps=1))  # records for round 0, no trackers
    with trackers:
        feed = Feed(trackers, result.scenario, result.round_stats)
        feed.start(None)
        feed.round(0, result.rounds)
        raise KeyboardInterrupt


def test_an_interrupted_run_closes_its_trackers_as_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tb = TensorBoardTracker(tmp_path / "tb", run_name="cut")
    ml = MlflowTracker(tmp_path / "mlruns", run_name="cut")
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after_round_0(Trackers([tb, ml]))
    events = tb_read(tmp_path / "tb" / "cut")
    assert [s for s, _ in tb_series(events, "accuracy/global_mean")] == [0]
    assert tb_hparams(events)[1] == "STATUS_FAILURE"
    client = ml_client(ml.uri, monkeypatch)
    killed = ml_runs(client, "spargo")["cut"]
    assert killed.info.status == "KILLED"
    assert [s for s, _ in ml_series(client, killed.info.run_id, "accuracy/global_mean")] == [0]
    trackers = Trackers([tb, ml])
    trackers.close()  # again, as the runner's finish and a caller's `with` both may: ignored
    assert ml_runs(client, "spargo")["cut"].info.status == "KILLED"


def test_a_partial_result_marked_interrupted_closes_as_killed() -> None:
    recorder = Recorder()
    feed = Feed([recorder], small(), stats=[])
    feed.start(None)
    feed.finish({"interrupted": True, "accuracy_mean": 0.5, "nodes": 8, "drops": {}})
    assert recorder.name == small().label
    assert recorder.statuses == ["KILLED"]
    assert recorder.logs == [(0, {"summary/accuracy_mean": 0.5})]


def _fail_in(trackers: Trackers) -> None:
    with trackers:
        Feed(trackers, small(), stats=[]).start(None)
        raise RuntimeError("a failing task")


def test_a_failure_closes_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tb = TensorBoardTracker(tmp_path / "tb", run_name="bad")
    ml = MlflowTracker(tmp_path / "mlruns", run_name="bad")
    with pytest.raises(RuntimeError, match="a failing task"):
        _fail_in(Trackers([tb, ml]))
    assert tb_hparams(tb_read(tmp_path / "tb" / "bad"))[1] == "STATUS_FAILURE"
    assert ml_runs(ml_client(ml.uri, monkeypatch), "spargo")["bad"].info.status == "FAILED"


def _record(peer: str, r: int, accuracy: float, drops: dict[str, int]) -> RoundMetrics:
    return RoundMetrics(
        peer_id=peer, round=r, time_s=float(r), loss=0.5, accuracy=accuracy,
        global_accuracy=None, density=1.0, bytes_sent=0, bytes_received=0, messages_sent=0,
        messages_received=0, messages_dropped=sum(drops.values()), drops=drops, merge={},
    )  # fmt: skip


def test_round_scalars_keep_departed_peers_drops_and_skip_unevaluated_rounds() -> None:
    seen: dict[str, RoundMetrics] = {}
    first = [_record("a", 0, 0.5, {"stale": 2}), _record("b", 0, 0.7, {})]
    out = round_scalars({"bytes_sent_total": 2_500_000, "consensus_distance": None}, first, seen)
    assert out["accuracy/local_mean"] == pytest.approx(0.6)
    assert (out["accuracy/local_min"], out["traffic/mb_sent"]) == (0.5, 2.5)
    assert "consensus/distance" not in out
    assert "accuracy/global_mean" not in out  # no peer has a global test set here
    later = round_scalars({}, [_record("b", 1, math.nan, {"invalid": 1})], seen)  # a left
    assert (later["drops/total"], later["drops/stale"], later["drops/invalid"]) == (3, 2, 1)
    assert "accuracy/local_mean" not in later  # eval_every skipped this round


def test_scenario_params_are_flat_and_typed() -> None:
    params = scenario_params(
        {"method_options": {"k": 3, "inner": {"x": True}}, "partition_at": (3, 6),
         "attack": None, "task": "t" * 7000, "lr": 0.05}
    )  # fmt: skip
    assert (params["method_options.k"], params["method_options.inner.x"]) == (3, True)
    assert (params["partition_at"], params["lr"]) == ("[3, 6]", 0.05)
    assert "attack" not in params
    assert len(str(params["task"])) == 6000


def test_a_taken_tensorboard_name_gets_a_suffix(tmp_path: Path) -> None:
    for expected in ("same", "same-2"):
        with TensorBoardTracker(tmp_path, run_name="same") as tb:
            tb.start("ignored", {"a": 1})
        assert tb.path == tmp_path / expected


# --- the command line --------------------------------------------------------------------
def test_spargo_sim_logs_to_both_trackers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spargo.cli import main

    out = tmp_path / "runs" / "mine"
    argv = [*FAST, "--out", str(out), "--tensorboard", str(tmp_path / "tb"), "--mlflow"]
    assert main(["sim", *argv]) == 0
    events = tb_read(tmp_path / "tb" / "mine")
    assert [s for s, _ in tb_series(events, "traffic/mb_sent")] == [0, 1]
    client = ml_client((out / "mlruns").resolve().as_uri(), monkeypatch)  # in the run folder
    assert ml_runs(client, "spargo")["mine"].info.status == "FINISHED"


def test_a_sweep_logs_one_tracker_run_per_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spargo.cli import main
    from spargo.sims.sweep import load_sweep

    sweep = tmp_path / "grid.toml"
    sweep.write_text(
        '[base]\nnodes = 4\nrounds = 2\nlocal_steps = 1\ntask = "synthetic"\n'
        'topology = "ring"\npartition = "iid"\n[grid]\nmethod = ["dense", "vc"]\n'
    )
    out = tmp_path / "sw"
    tb = tmp_path / "tb"
    argv = ["--sweep", str(sweep), "--out", str(out), "--workers", "1"]
    assert main(["sim", *argv, "--tensorboard", str(tb), "--mlflow", "--quiet"]) == 0
    cells = sorted(scenario.label for _, scenario in load_sweep(sweep))
    assert len(cells) == 2
    assert sorted(p.name for p in (tb / "sw").iterdir()) == cells
    assert len(tb_series(tb_read(tb / "sw" / cells[1]), "density/mean")) == 2
    runs = ml_runs(ml_client((out / "mlruns").as_uri(), monkeypatch), "sw")
    assert sorted(runs) == cells
    assert {r.info.status for r in runs.values()} == {"FINISHED"}


def test_a_tracker_spec_travels_to_sweep_workers(tmp_path: Path) -> None:
    spec = TrackerSpec(tensorboard=str(tmp_path), mlflow=tmp_path.as_uri(), group="g")
    assert pickle.loads(pickle.dumps(spec)) == spec


@pytest.mark.parametrize(
    ("module", "flags"),
    [("tensorboard", ["--tensorboard", "tb"]), ("mlflow", ["--mlflow"])],
)
@pytest.mark.parametrize("sweep", [False, True])
def test_a_missing_extra_is_one_line_naming_it(
    module: str,
    flags: list[str],
    sweep: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid]\nseed = [0]\n")
    argv = ["--sweep", str(grid)] if sweep else [*FAST]
    needle = f"the '{module}' extra installs: pip install 'spargo[{module}]'"
    assert_one_line_error([*argv, *flags], needle, lambda: capsys.readouterr().err)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--mlflow", "bogus://x"], "--mlflow bogus://x: "),
        (["--tensorboard", ""], "--tensorboard: give a folder"),
        (["--tensorboard", "afile"], "--tensorboard: cannot create"),
    ],
)
def test_a_bad_tracker_target_is_one_line(
    flags: list[str],
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    assert_one_line_error([*FAST, *flags], needle, lambda: capsys.readouterr().err)


def test_the_extras_exist_and_the_dev_extra_pulls_them() -> None:
    from spargo.cli import missing_extra

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    pulled = extras["dev"][0]  # "spargo[all,tensorboard,mlflow]"
    for extra in ("tensorboard", "mlflow"):
        assert extras[extra]
        assert extra in pulled
    assert missing_extra("sim", "tensorboard") == "tensorboard"
    assert missing_extra("sim", "mlflow.tracking") == "mlflow"
