"""Sweeps: a grid of scenarios (methods × topologies × seeds × faults) run in parallel processes.

A sweep file is TOML::

    [base]                      # any scenario keys shared by every run
    nodes = 16
    rounds = 20
    [grid]                      # lists; the sweep runs their product
    method = ["dense", "vc"]
    topology = ["ring", "smallworld"]
    seed = [0, 1]
    [faults.clean]              # named fault sets (scenario keys); default: one clean set
    [faults.lossy]
    loss = 0.3

Each run writes its own reports under ``OUT/<run name>/``; the sweep writes ``sweep.csv``,
``sweep.md`` (one comparison table) and ``sweep.png`` (accuracy against MB sent).
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from spargo.sims.scenario import Scenario, ScenarioError, scenario_from_mapping, slug
from spargo.sims.trackers import TrackerSpec

COLUMNS = (
    "name",
    "method",
    "topology",
    "seed",
    "faults",
    "accuracy_mean",
    "accuracy_min",
    "density",
    "consensus_distance",
    "bytes_sent_total",
    "messages_dropped",
    "wall_s",
)


def load_sweep(path: str | Path) -> list[tuple[str, Scenario]]:
    """The (fault-set name, scenario) pairs of a sweep file, checked before anything runs."""
    from spargo.node.config import load_toml

    data = load_toml(path)
    unknown = sorted(set(data) - {"base", "grid", "faults"})
    if unknown:
        raise ScenarioError(
            f"{path}: unknown table(s) {', '.join(unknown)}; use base, grid, faults"
        )
    base = dict(data.get("base", {}))
    grid: Mapping[str, Any] = data.get("grid", {})
    faults: Mapping[str, Any] = data.get("faults", {}) or {"clean": {}}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ScenarioError(f"{path}: grid.{key} must be a non-empty list")
    keys = sorted(grid)
    out = []
    for fault_name, fault in faults.items():
        for combo in itertools.product(*(grid[k] for k in keys)):
            values = {**base, **dict(zip(keys, combo)), **dict(fault)}
            # As with `spargo sim --config`: a method the file names runs with its own
            # defaults; only the unnamed default run gets the default SpaFL options.
            if "method" in values:
                values.setdefault("method_options", {})
            probe = scenario_from_mapping(values, source=str(path))
            # Every grid value is in the name, so no two runs share an output folder (a
            # given name replaces the label, which otherwise carries method/topology/seed).
            in_label = () if probe.name else ("method", "topology", "seed")
            extra = [f"{k}_{slug(str(v))}" for k, v in zip(keys, combo) if k not in in_label]
            values["name"] = "-".join([probe.label, *extra, str(fault_name)])
            out.append((str(fault_name), scenario_from_mapping(values, source=str(path))))
    if not out:
        raise ScenarioError(f"{path}: the sweep has no runs")
    names = [scenario.label for _, scenario in out]
    if len(set(names)) != len(names):
        raise ScenarioError(f"{path}: two runs of the sweep would share a name; fix the grid")
    return out


def _init_worker() -> None:
    import torch

    # One thread per worker: the processes are the parallelism.
    torch.set_num_threads(1)


def _run_one(values: dict[str, Any], out_dir: str, trackers: TrackerSpec) -> dict[str, Any]:
    from spargo.sims.report import write_reports
    from spargo.sims.runner import run

    # Scenarios travel as plain dicts (their read-only mappings do not pickle).
    scenario = scenario_from_mapping(values)
    with trackers.open(scenario.label) as tracked:  # one tracker run per cell
        result = run(scenario, trackers=tracked)
    write_reports(result, Path(out_dir) / scenario.label, plots=False)
    return {
        "summary": result.summary,
        "curve": [(r["bytes_sent_total"], r["accuracy_mean"]) for r in result.round_stats],
    }


def run_sweep(
    path: str | Path, out_dir: str | Path, workers: int = 0, trackers: TrackerSpec | None = None
) -> list[dict[str, Any]]:
    """Run every scenario of the sweep file; returns one result row per run, in grid order.
    ``trackers``: experiment trackers, one tracker run per cell named by the cell."""
    runs = load_sweep(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(len(runs), multiprocessing.cpu_count())
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        spec = trackers or TrackerSpec()
        futures = [
            pool.submit(_run_one, scenario.to_dict(), str(out), spec) for _, scenario in runs
        ]
        results = [f.result() for f in futures]
    rows = []
    for (fault, _scenario), res in zip(runs, results):
        row = {k: res["summary"].get(k) for k in COLUMNS}
        row["faults"] = fault
        row["curve"] = res["curve"]
        rows.append(row)
    write_tables(rows, out)
    plot_sweep(rows, out / "sweep.png")
    return rows


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    """``sweep.csv`` and ``sweep.md`` (the comparison table)."""
    with (out / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for key in COLUMNS:
            value = row.get(key)
            if key == "bytes_sent_total" and value is not None:
                value = f"{value / 1e6:.2f} MB"
            elif isinstance(value, float):
                value = f"{value:.4g}"
            cells.append("–" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(
        json.dumps([{k: r.get(k) for k in COLUMNS} for r in rows], indent=2) + "\n"
    )


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against MB sent, one line per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for row in rows:
        points = [(b / 1e6, a) for b, a in row["curve"] if a is not None]
        if points:
            ax.plot(*zip(*points), marker=".", label=row["name"])
    ax.set_xlabel("MB sent (all peers)")
    ax.set_ylabel("mean accuracy")
    ax.set_xscale("symlog")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))  # type: ignore[no-untyped-call]
