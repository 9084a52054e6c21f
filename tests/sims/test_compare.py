"""``sims.compare``: several named runs, their curves, one plot (the examples' building blocks)."""

from __future__ import annotations

from pathlib import Path

from spargo.sims import Scenario
from spargo.sims.compare import compare, plot_curves, round_curves


def _tiny(**fields: object) -> Scenario:
    return Scenario(nodes=4, topology="ring", method="dense", rounds=3, task="synthetic", **fields)  # type: ignore[arg-type]


def test_compare_runs_each_scenario_under_its_name(tmp_path: Path) -> None:
    results = compare({"clean": _tiny(), "lossy": _tiny(loss=0.5)}, label="cases")
    assert list(results) == ["clean", "lossy"]
    assert results["clean"].summary["messages_dropped"] == 0
    assert results["lossy"].summary["messages_dropped"] > 0
    curves = round_curves(results, "accuracy_mean")
    assert [r for r, _ in curves["clean"]] == [0, 1, 2]
    assert all(0.0 <= acc <= 1.0 for _, acc in curves["lossy"])
    png = plot_curves(curves, tmp_path / "acc.png", title="t", ylabel="accuracy")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_round_curves_skip_rounds_without_a_value() -> None:
    results = compare({"x": _tiny(eval_every=2)})
    points = round_curves(results, "accuracy_mean")["x"]
    assert [r for r, _ in points] == [0, 2]
