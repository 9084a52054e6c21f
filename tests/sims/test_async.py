"""The simulator in async mode: own clocks per peer, merges on arrival, staleness, replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spargo.cli import build_parser, main
from spargo.sims.cli import _scenario_from_args
from spargo.sims.runner import SimResult, run
from spargo.sims.scenario import Scenario, ScenarioError
from spargo.sims.swarm import Swarm, start_offsets
from tests.sims.conftest import assert_one_line_error


def _digits(**overrides: Any) -> Scenario:
    values: dict[str, Any] = {
        "nodes": 8,
        "topology": "ring",
        "method": "vc",
        "method_options": {},
        "rounds": 10,
        "task": "digits",
        "partition": "iid",
        "mode": "async",
        "train_period_s": 0.5,
        "gossip_period_s": 0.4,
        "consensus": False,
    }
    values.update(overrides)
    return Scenario(**values)


def _fingerprint(result: SimResult) -> str:
    summary = {k: v for k, v in result.summary.items() if k != "wall_s"}
    metrics = [m.to_dict() for m in result.rounds]
    return json.dumps([summary, metrics, result.round_stats], sort_keys=True)


@pytest.mark.parametrize("method", ["vc", "dense"])
def test_async_swarm_learns_and_merges_on_arrival(method: str) -> None:
    result = run(_digits(method=method))
    s = result.summary
    assert s["mode"] == "async"
    assert s["accuracy_mean"] >= 0.85, s
    assert s["merges"] > 8 * 10  # more merges than bursts: gossip arrives between bursts
    assert any("merged_peers" in m.merge for m in result.rounds)
    # Every peer did its bursts; the per-round rows cover them all and the run ended.
    assert sorted({m.round for m in result.rounds}) == list(range(10))
    assert [row["round"] for row in result.round_stats] == list(range(10))
    # Peers are not in lock step: their bursts happen at different simulated times.
    assert len({m.time_s for m in result.rounds if m.round == 0}) == 8


def test_same_seed_same_async_run() -> None:
    scenario = _digits(rounds=5, step_time_s=0.02, speed_spread=0.5, loss=0.1, latency_ms=40)
    first, second = run(scenario), run(scenario)
    assert first.summary["merges"] > 0
    assert _fingerprint(first) == _fingerprint(second)
    assert _fingerprint(first) != _fingerprint(run(_digits(rounds=5, seed=1)))
    budget = _digits(rounds=100, duration_s=3.0, step_time_s=0.02, speed_spread=0.5)
    assert _fingerprint(run(budget)) == _fingerprint(run(budget))


def test_heterogeneous_speeds_show_staleness_and_still_learn() -> None:
    result = run(_digits(step_time_s=0.05, speed_spread=0.8, train_period_s=0.1))
    s = result.summary
    assert s["staleness_max"] >= 2, s
    assert s["staleness_mean"] > 0
    assert any(m.merge.get("staleness_mean", 0) > 0 for m in result.rounds)
    assert s["accuracy_mean"] >= 0.8, s
    # Fast devices finish their bursts long before slow ones: nobody waits for anybody.
    finished = {m.peer_id: m.time_s for m in result.rounds}
    assert max(finished.values()) > 2 * min(finished.values())


def test_a_time_budget_lets_fast_devices_do_more_bursts() -> None:
    scenario = _digits(
        rounds=500, duration_s=6.0, step_time_s=0.02, speed_spread=0.8, max_staleness=100
    )
    result = run(scenario)
    s = result.summary
    assert s["bursts_max"] > 2 * s["bursts_min"], s
    assert s["simulated_s"] <= 6.0
    assert s["bursts_max"] < 500  # the clock, not the burst cap, ended the run
    assert s["accuracy_mean"] >= 0.8, s
    assert result.round_stats[0]["peers"] == 8


def test_rounds_mode_merges_fresh_messages_only() -> None:
    result = run(_digits(mode="rounds", rounds=3, consensus=False, task="synthetic"))
    assert result.summary["mode"] == "rounds"
    assert result.summary["merges"] > 0
    assert result.summary["staleness_max"] == 0


def test_start_phases_are_seeded_and_within_one_period() -> None:
    scenario = _digits(train_period_s=2.0)
    offsets = start_offsets(scenario)
    assert offsets == start_offsets(scenario)
    assert all(0 <= x < 2.0 for x in offsets)
    assert len(set(offsets)) == 8
    assert start_offsets(_digits(mode="rounds")) == [0.0] * 8


def _scenario(argv: list[str]) -> Any:
    return _scenario_from_args(build_parser().parse_args(["sim", *argv]))


def test_mode_flags_reach_every_peer_config(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text(
        'mode = "async"\ntrain_period_s = 3.0\nnodes = 4\ntopology = "ring"\ntask = "synthetic"\n'
    )
    s = _scenario(
        ["--config", str(config), "--gossip-period-s", "0.25", "--max-staleness", "2",
         "--method", "dense", "--train-period-s", "0.5"]
    )  # fmt: skip
    assert (s.mode, s.train_period_s, s.gossip_period_s, s.max_staleness) == ("async", 0.5, 0.25, 2)
    swarm = Swarm(s, lambda _m: None)
    for node in swarm.nodes.values():
        c = node.config
        assert (c.mode, c.train_period_s, c.gossip_period_s, c.max_staleness) == (
            "async",
            0.5,
            0.25,
            2,
        )
    assert _scenario(["--nodes", "4"]).mode == "rounds"


def test_shipped_async_scenario_loads() -> None:
    path = Path(__file__).parents[2] / "sims" / "scenarios" / "async.toml"
    s = _scenario(["--config", str(path)])
    assert s.mode == "async"
    assert s.speed_spread > 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--mode", "sync"], "--mode 'sync' is unknown; use rounds or async"),
        (["--train-period-s", "0"], "--train-period-s must be a positive number"),
        (["--gossip-period-s", "-1"], "--gossip-period-s must be a positive number"),
        (["--gossip-period-s", "inf"], "--gossip-period-s must be a positive number"),
        (["--max-staleness", "-1"], "--max-staleness must be a whole number >= 0"),
        (["--duration-s", "5"], "--duration-s needs --mode async"),
        (["--mode", "async", "--duration-s", "-5"], "--duration-s must be a number"),
        (["--mode", "async", "--method", "allreduce"], "use it with --mode rounds"),
        (["--train-period-s", "fast"], "invalid float value"),
    ],
)
def test_bad_mode_values_are_one_line_errors(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_one_line_error(argv, needle, lambda: capsys.readouterr().err)


def test_scenario_rejects_bad_mode_values_directly() -> None:
    with pytest.raises(ScenarioError, match="--max-staleness"):
        _digits(max_staleness=True)
    with pytest.raises(ScenarioError, match="--train-period-s"):
        _digits(train_period_s="1")


def test_async_cli_run_writes_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["sim", "--nodes", "5", "--topology", "ring", "--method", "dense", "--task",
            "synthetic", "--rounds", "3", "--mode", "async", "--speed-spread", "0.5",
            "--step-time-s", "0.1", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert [line.split()[1] for line in err if line.startswith("round ")] == ["0", "1", "2"]
    assert "(async)" in err[-1]
    summary = json.loads(captured.out)
    assert summary["mode"] == "async"
    assert summary["merges"] > 0
    document = json.loads((out / "summary.json").read_text())
    assert document["scenario"]["mode"] == "async"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5 * 3
    assert (out / "accuracy.png").exists()


def test_poisson_clocks_replay_and_differ_from_fixed_periods() -> None:
    fixed = run(_digits(rounds=6, consensus=False, task="synthetic"))
    poisson = run(_digits(rounds=6, consensus=False, task="synthetic", poisson=True))
    again = run(_digits(rounds=6, consensus=False, task="synthetic", poisson=True))
    assert poisson.summary["simulated_s"] != fixed.summary["simulated_s"]
    assert {k: v for k, v in poisson.summary.items() if k != "wall_s"} == {
        k: v for k, v in again.summary.items() if k != "wall_s"
    }
