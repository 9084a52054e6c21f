"""``spargo sim``: flags, TOML files, overrides, one-line errors, reports, sweeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spargo.cli import build_parser, main
from spargo.sims.cli import _scenario_from_args
from tests.sims.conftest import assert_one_line_error

FAST = ["--nodes", "6", "--topology", "ring", "--method", "dense", "--task", "synthetic"]


def _scenario(argv: list[str]) -> object:
    return _scenario_from_args(build_parser().parse_args(["sim", *argv]))


def test_fault_flags_reach_the_scenario() -> None:
    s = _scenario(
        ["--loss", "0.3", "--latency-ms", "20", "--bandwidth-mbps", "8", "--churn", "0.1",
         "--partition-at", "5:9", "--attack", "nan", "--attackers", "0.25"]
    )  # fmt: skip
    assert (s.loss, s.latency_ms, s.bandwidth_mbps, s.churn) == (0.3, 20.0, 8.0, 0.1)  # type: ignore[attr-defined]
    assert s.partition_at == (5, 9)  # type: ignore[attr-defined]
    assert s.attack == "nan"  # type: ignore[attr-defined]


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text('nodes = 12\nloss = 0.1\nmethod = "vc"\npartition_at = [3, 6]\n')
    s = _scenario(["--config", str(config), "--loss", "0.2"])
    assert (s.nodes, s.loss, s.method, s.partition_at) == (12, 0.2, "vc", (3, 6))  # type: ignore[attr-defined]


def test_shipped_scenarios_load() -> None:
    folder = Path(__file__).parents[2] / "sims" / "scenarios"
    files = sorted(folder.glob("*.toml"))
    assert files
    for path in files:
        _scenario(["--config", str(path)])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--loss", "1.5"], "--loss must be in [0, 1)"),
        (["--partition-at", "9:3"], "ROUND:HEAL_ROUND"),
        (["--partition-at", "nine"], "ROUND:HEAL_ROUND"),
        (["--latency-ms", "-1"], "--latency-ms"),
        (["--method", "magic"], "--method 'magic' is unknown"),
        (["--attack", "bogus", "--attackers", "0.2"], "--attack 'bogus'"),
        (["--attack", "nan"], "--attackers"),
        (["--config", "/nonexistent.toml"], "does not exist"),
        (["--loss", "abc"], "invalid float value"),
    ],
)
def test_bad_values_are_one_line_errors(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_one_line_error(argv, needle, lambda: capsys.readouterr().err)


def test_unknown_key_in_the_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "s.toml"
    config.write_text("nodez = 3\n")
    assert main(["sim", "--config", str(config)]) == 2
    assert "unknown key(s) nodez" in capsys.readouterr().err


def test_a_run_writes_reports_and_ends_with_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["sim", *FAST, "--rounds", "3", "--out", str(out), "--json", "--loss", "0.1"])
    assert code == 0
    captured = capsys.readouterr()
    # --json: stdout is exactly one JSON object; the human lines went to stderr.
    summary = json.loads(captured.out)
    assert isinstance(summary, dict)
    assert captured.out.strip().count("\n") == 0
    rounds = [line.split()[1:3] for line in captured.err.splitlines() if line.startswith("round ")]
    assert rounds == [["0", "[1/3]"], ["1", "[2/3]"], ["2", "[3/3]"]]
    for key in ("nodes", "rounds", "method", "topology", "seed", "accuracy_mean", "accuracy_min",
                "accuracy_max", "density", "bytes_sent_total", "messages_sent",
                "messages_dropped", "wall_s"):  # fmt: skip
        assert key in summary
    assert json.loads((out / "summary.json").read_text())["summary"]["nodes"] == 6
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6 * 3
    for name in ("accuracy.png", "accuracy_vs_mb.png", "consensus.png", "density.png",
                 "topology.png"):  # fmt: skip
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_runs_the_grid_in_processes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[base]\nnodes = 4\nrounds = 2\nlocal_steps = 2\ntask = "synthetic"\npartition = "iid"\n'
        '[grid]\nmethod = ["dense", "allreduce"]\ntopology = ["ring"]\n'
        "[faults.clean]\n[faults.lossy]\nloss = 0.2\n"
    )
    out = tmp_path / "out"
    assert main(["sim", "--sweep", str(sweep), "--out", str(out), "--workers", "2"]) == 0
    table = (out / "sweep.md").read_text().splitlines()
    assert len(table) == 2 + 4
    assert (out / "sweep.png").exists()
    assert (out / "sweep.csv").exists()
    assert (out / "dense-ring-s0-lossy" / "summary.json").exists()


def test_default_run_gossips_weights_but_a_named_spafl_sends_thresholds_only() -> None:
    from spargo.cli import build_parser
    from spargo.sims.cli import _scenario_from_args

    def scenario(*argv: str) -> Any:
        return _scenario_from_args(build_parser().parse_args(["sim", *argv]))

    assert dict(scenario().method_options) == {"weights_every": 2}
    assert dict(scenario("--method", "spafl").method_options) == {}
    assert dict(scenario("--method", "spafl", "--option", "alpha=0.02").method_options) == {
        "alpha": 0.02
    }
    assert dict(scenario("--option", "alpha=0.02").method_options) == {
        "weights_every": 2,
        "alpha": 0.02,
    }
    assert dict(scenario("--method", "dense").method_options) == {}


def test_a_sweep_treats_a_method_named_in_base_like_a_config_file(tmp_path: Path) -> None:
    from spargo.sims.sweep import load_sweep

    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[base]\nmethod = "spafl"\n[grid]\nseed = [0, 1]\n')
    options = [dict(s.method_options) for _, s in load_sweep(sweep)]
    assert options == [{}, {}]  # thresholds only, as `spargo sim --config` runs it
    sweep.write_text("[grid]\nseed = [0, 1]\n")  # no method named: the default run
    options = [dict(s.method_options) for _, s in load_sweep(sweep)]
    assert options == [{"weights_every": 2}] * 2


def test_a_sweep_with_a_given_name_keeps_the_grid_in_the_run_names(tmp_path: Path) -> None:
    from spargo.sims.sweep import load_sweep

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[base]\nname = "study"\n[grid]\nmethod = ["dense", "vc"]\ntopology = ["ring", "er:0.5"]\n'
    )
    names = [s.label for _, s in load_sweep(sweep)]
    assert names == [
        "study-method_dense-topology_ring-clean",
        "study-method_dense-topology_er_0_5-clean",
        "study-method_vc-topology_ring-clean",
        "study-method_vc-topology_er_0_5-clean",
    ]


def test_the_summary_line_wraps_to_a_terminal_and_stays_one_line_in_a_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import os
    import shutil

    from spargo.sims.cli import _fit

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    line = "16 peers, smallworld, spafl, 30 rounds: accuracy mean 0.936 (min 0.905) " * 3
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: os.terminal_size((40, 20)))
    wrapped = _fit(line.strip(), Terminal())
    assert len(wrapped.splitlines()) > 1
    assert all(len(part) <= 40 for part in wrapped.splitlines())
    assert wrapped.split() == line.split()  # nothing lost, no word broken
    assert _fit(line, io.StringIO()) == line  # a pipe: one line
