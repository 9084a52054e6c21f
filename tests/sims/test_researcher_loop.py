"""The researcher's loop (issue 18): interrupts, SIGPIPE, JSON-only stdout, streaming sweeps
with failed cells and resume, cumulative traffic under churn, run folders never overwritten,
user tasks from the working directory, one flag per scenario field."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from spargo.cli import build_parser, main
from spargo.sims.cli import _scenario_from_args
from spargo.sims.flags import scenario_flags
from spargo.sims.runner import run
from spargo.sims.scenario import ChurnEvent, Scenario
from tests.sims.conftest import small

ROOT = Path(__file__).parents[2]
FAST = ["--nodes", "4", "--topology", "ring", "--method", "dense", "--task", "synthetic",
        "--partition", "iid", "--local-steps", "2"]  # fmt: skip


def _spargo(*argv: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "spargo", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_rows(path: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {count} rows in {path} (exit {proc.poll()})")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_stops_cleanly_with_partial_files(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "run"
    proc = _spargo("sim", *FAST, "--rounds", "500", "--out", str(out), "--quiet", cwd=tmp_path)
    _wait_for_rows(out / "rounds.jsonl", 3, proc)
    proc.send_signal(sig)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0  # one line
    assert "interrupted after" in stderr
    document = json.loads((out / "summary.json").read_text())
    rows = (out / "rounds.jsonl").read_text().splitlines()
    assert document["summary"]["interrupted"] is True
    assert 3 <= document["summary"]["rounds_done"] == len(rows) < 500
    assert [json.loads(r)["round"] for r in rows] == list(range(len(rows)))
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 4 * len(rows)


def test_a_closed_stdout_ends_the_run_quietly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _spargo("sim", *FAST, "--rounds", "500", "--out", str(out), cwd=tmp_path)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    stderr = proc.stderr.read() if proc.stderr is not None else ""
    proc.wait(timeout=120)
    assert first.startswith("round   0 [1/500]")
    assert proc.returncode == 141
    assert stderr == ""
    assert json.loads((out / "summary.json").read_text())["summary"]["interrupted"] is True


def test_a_closed_stdout_after_a_listing_is_quiet(tmp_path: Path) -> None:
    proc = _spargo("sim", "--scenario", "list", cwd=tmp_path)
    assert proc.stdout is not None
    proc.stdout.close()
    stderr = proc.stderr.read() if proc.stderr is not None else ""
    proc.wait(timeout=60)
    assert proc.returncode == 141
    assert stderr == ""


def test_json_stdout_is_exactly_one_object_even_with_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sim", *FAST, "--rounds", "2", "--out", str(tmp_path / "r"), "--json", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    decoder = json.JSONDecoder()
    value, end = decoder.raw_decode(captured.out)
    assert isinstance(value, dict)
    assert captured.out[end:].strip() == ""
    assert value["rounds_done"] == 2
    assert value["interrupted"] is False
    assert "accuracy mean" in captured.err  # the human line went to stderr


def test_cumulative_traffic_never_goes_down_under_churn() -> None:
    result = run(small(rounds=14, churn=0.2, churn_downtime=2, churn_mode="fail"))
    assert result.summary["churn_events"] > 0
    sent = [row["bytes_sent_total"] for row in result.round_stats]
    assert all(a <= b for a, b in itertools.pairwise(sent)), sent
    assert sent[-1] <= result.summary["bytes_sent_total"]


def _sweep_file(tmp_path: Path) -> Path:
    (tmp_path / "broken_task.py").write_text(
        "def make(seed):\n    raise RuntimeError('this task is broken on purpose')\n"
    )
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[base]\nnodes = 4\nrounds = 2\nlocal_steps = 2\npartition = "iid"\nmethod = "dense"\n'
        '[grid]\ntask = ["synthetic", "broken_task:make"]\ntopology = ["ring"]\n'
    )
    return sweep


def test_a_failing_cell_is_listed_and_the_rest_of_the_sweep_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sweep, out = _sweep_file(tmp_path), tmp_path / "out"
    assert main(["sim", "--sweep", str(sweep), "--out", str(out), "--workers", "2"]) == 1
    captured = capsys.readouterr()
    assert "sweep 2/2" in captured.err  # progress: cells done/total
    table = (out / "sweep.md").read_text()
    assert "this task is broken on purpose" in table
    rows = json.loads((out / "sweep.json").read_text())
    assert [bool(r["error"]) for r in rows] == [False, True]
    assert rows[0]["accuracy_mean"] is not None
    assert (out / "sweep.png").exists()
    assert (out / "sweep.csv").exists()
    done = next(p for p in out.iterdir() if p.is_dir()) / "summary.json"
    stamp = done.stat().st_mtime_ns
    # --resume runs only what has no summary (the broken cell, which fails again).
    assert main(["sim", "--sweep", str(sweep), "--out", str(out), "--resume", "--json"]) == 1
    captured = capsys.readouterr()
    assert done.stat().st_mtime_ns == stamp
    report = json.loads(captured.out)
    assert report["failed"] == 1
    assert len(report["runs"]) == 2
    assert "1 resumed" in captured.err or "sweep 2/2" in captured.err


def test_a_named_run_never_overwrites_an_earlier_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["sim", *FAST, "--rounds", "1", "--name", "mine", "--quiet", "--no-plots"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "runs/mine already holds a run" in err


def test_a_user_task_module_in_the_working_directory_loads_without_pythonpath(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd_task_mod.py").write_text(
        "from spargo.node.tasks import load_task\n\n"
        "def make(seed):\n    return load_task('synthetic', seed)\n"
    )
    monkeypatch.chdir(tmp_path)
    here = {"", str(tmp_path), "."}
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in here])
    monkeypatch.delitem(sys.modules, "cwd_task_mod", raising=False)
    argv = ["sim", *FAST, "--task", "cwd_task_mod:make", "--rounds", "1", "--quiet", "--no-plots",
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err


def test_every_scenario_field_has_a_flag() -> None:
    flagged = {f.name for f, _ in scenario_flags()}
    python_only = {f.name for f in fields(Scenario) if not f.metadata.get("cli", True)}
    assert python_only == {"faults"}
    assert flagged == {f.name for f in fields(Scenario)} - python_only
    defaults = vars(build_parser().parse_args(["sim"]))
    assert defaults["round_deadline_s"] is None  # not given: the file's or the default holds


def test_generated_flags_reach_the_scenario() -> None:
    argv = ["sim", "--round-deadline-s", "7.5", "--momentum", "0.5", "--no-consensus",
            "--partition-at", "2:4", "--partition-groups", "0,1/2,3", "--nodes", "4",
            "--churn-events", "1:3:leave:0", "--churn-events", "2:2", "--distinct-init",
            "--option", "robust=clip", "--method", "dense"]  # fmt: skip
    s = _scenario_from_args(build_parser().parse_args(argv))
    assert (s.round_deadline_s, s.momentum, s.consensus) == (7.5, 0.5, False)
    assert s.partition_at == (2, 4)
    assert s.partition_groups == ((0, 1), (2, 3))
    assert s.churn_events == (ChurnEvent(1, 3, "leave", 0), ChurnEvent(2, 2))
    assert s.distinct_init is True
    assert dict(s.method_options) == {"robust": "clip"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--churn-events", "x:1"], "PEER:ROUND"),
        (["--partition-groups", "a/b"], "peer numbers per side"),
        (["--option", "novalue"], "KEY=VALUE"),
        (["--round-deadline-s", "0"], "--round-deadline-s must be a positive number"),
    ],
)
def test_generated_flags_give_one_line_errors(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.sims.conftest import assert_one_line_error

    assert_one_line_error(argv, needle, lambda: capsys.readouterr().err)
