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
``sweep.md`` (one comparison table) and ``sweep.png`` (accuracy against MB sent). Tables
carry both accuracies (global test set, each peer's own split), the averaged model's and the
basis each cell's headline ``accuracy_mean`` uses (``accuracy_on``; the scenario's ``basis``,
global unless a cell sets it); the plot draws the headline and names its basis.
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spargo.sims.plotting import LINE_STYLES, MARKERS, halo_label, halo_style, overlap_groups
from spargo.sims.scenario import Scenario, ScenarioError, scenario_from_mapping, slug
from spargo.sims.trackers import TrackerSpec

if TYPE_CHECKING:
    from spargo.node.progress import Progress

COLUMNS = (
    "name",
    "method",
    "topology",
    "seed",
    "faults",
    "accuracy_on",
    "accuracy_mean",
    "global_accuracy_mean",
    "local_accuracy_mean",
    "averaged_model_accuracy",
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
    import signal

    import torch

    # One thread per worker: the processes are the parallelism.
    torch.set_num_threads(1)
    # Ctrl-C is the parent's to handle (it keeps the table of the cells done so far).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_one(values: dict[str, Any], out_dir: str, trackers: TrackerSpec) -> dict[str, Any]:
    from spargo.sims.report import write_reports
    from spargo.sims.runner import run

    # Scenarios travel as plain dicts (their read-only mappings do not pickle).
    scenario = scenario_from_mapping(values)
    with trackers.open(scenario.label) as tracked:  # one tracker run per cell
        result = run(scenario, trackers=tracked)
    write_reports(result, Path(out_dir) / scenario.label, plots=False)
    return {"summary": result.summary, "curve": _curve(result.round_stats)}


def _curve(rows: list[dict[str, Any]]) -> list[tuple[int, float | None]]:
    return [(r["bytes_sent_total"], r["accuracy_mean"]) for r in rows]


def _saved(out: Path, scenario: Scenario) -> dict[str, Any] | None:
    """A finished cell's result from its files (``--resume``), or None if it has none."""
    folder = out / scenario.label
    try:
        summary = json.loads((folder / "summary.json").read_text())["summary"]
        lines = (folder / "rounds.jsonl").read_text().splitlines()
    except (OSError, ValueError, KeyError):
        return None
    return {"summary": summary, "curve": _curve([json.loads(x) for x in lines if x])}


def _row(
    fault: str, scenario: Scenario, res: dict[str, Any] | None, error: str = ""
) -> dict[str, Any]:
    if res is None:
        row: dict[str, Any] = {k: None for k in COLUMNS}
        row.update(name=scenario.label, method=scenario.method, seed=scenario.seed)
        row.update(topology=scenario.topology, curve=[])
    else:
        row = {k: res["summary"].get(k) for k in COLUMNS}
        row["curve"] = res["curve"]
    row["faults"] = fault
    row["error"] = error
    return row


def run_sweep(
    path: str | Path,
    out_dir: str | Path,
    workers: int = 0,
    *,
    resume: bool = False,
    trackers: TrackerSpec | None = None,
) -> list[dict[str, Any]]:
    """Run every cell of the sweep file; returns one row per cell, in grid order.

    Each finished cell goes straight into ``sweep.csv``/``.md``/``.json``/``.png`` (so a
    stopped sweep leaves its table); a cell that raises is a row with its one-line ``error``
    and the others go on. With ``resume``, cells whose ``summary.json`` exists are not run
    again. Progress (cells done/total, ETA) goes to stderr. ``trackers``: experiment
    trackers, one tracker run per cell named by the cell.
    """
    from spargo.node.progress import Progress

    runs = load_sweep(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any] | None] = [None] * len(runs)
    todo = []
    for i, (fault, scenario) in enumerate(runs):
        saved = _saved(out, scenario) if resume else None
        if saved is None:
            todo.append(i)
        else:
            rows[i] = _row(fault, scenario, saved)
    with Progress(len(runs), label="sweep", unit="cells") as bar:
        if len(todo) < len(runs):
            bar.skip(len(runs) - len(todo), f"{len(runs) - len(todo)} resumed")
            _write_all(rows, out)
        _run_cells(runs, todo, rows, out, workers, bar, trackers or TrackerSpec())
    return [r for r in rows if r is not None]


def _run_cells(
    runs: list[tuple[str, Scenario]],
    todo: list[int],
    rows: list[dict[str, Any] | None],
    out: Path,
    workers: int,
    bar: Progress,
    trackers: TrackerSpec,
) -> None:
    """Run the cells ``todo`` in worker processes; fill ``rows`` and the tables as each ends."""
    workers = workers or min(max(1, len(todo)), multiprocessing.cpu_count())
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        futures = {pool.submit(_run_one, runs[i][1].to_dict(), str(out), trackers): i for i in todo}
        try:
            for future in as_completed(futures):
                i = futures[future]
                fault, scenario = runs[i]
                try:
                    rows[i] = _row(fault, scenario, future.result())
                except Exception as exc:  # a cell's failure is reported, not fatal
                    rows[i] = _row(fault, scenario, None, _one_line(exc))
                _write_all(rows, out)
                bar.update(status=scenario.label)
                bar.note(_cell_line(bar.done, len(runs), rows[i] or {}, bar.eta_text()))
        except KeyboardInterrupt:
            # Cells not started are dropped; those running finish (workers ignore Ctrl-C)
            # and the table keeps every cell done: `--resume` continues.
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cell_line(done: int, total: int, row: dict[str, Any], eta: str) -> str:
    if row.get("error"):
        outcome = f"FAILED: {row['error']}"
    else:
        outcome = "  ".join(
            f"{b} {'n/a' if row.get(k) is None else format(row[k], '.3f')}"
            for b, k in (("global", "global_accuracy_mean"), ("local", "local_accuracy_mean"))
        )
    return f"sweep {done}/{total} {row.get('name')}: {outcome} ({eta})"


def _write_all(rows: list[dict[str, Any] | None], out: Path) -> None:
    done = [r for r in rows if r is not None]
    write_tables(done, out)
    plot_sweep(done, out / "sweep.png")


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    """``sweep.csv``, ``sweep.json`` and ``sweep.md`` (the comparison table; a failed cell
    shows its error). Each is written whole to a temporary file, then renamed into place."""
    columns = (*COLUMNS, "error")
    tmp = out / "sweep.csv.tmp"
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "sweep.csv")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(key, row.get(key)) for key in columns) + " |")
    _replace(out / "sweep.md", "\n".join(lines) + "\n")
    _replace(
        out / "sweep.json",
        json.dumps([{k: r.get(k) for k in columns} for r in rows], indent=2) + "\n",
    )


def _md_cell(key: str, value: Any) -> str:
    if key == "bytes_sent_total" and value is not None:
        return f"{value / 1e6:.2f} MB"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None or value == "":
        return "–"
    return str(value).replace("|", "\\|")


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against MB sent, one line per finished cell; colour = method, line style and
    marker = the rest of the cell (topology, seed, fault set). Cells with the same curve are
    drawn as halos (the first widest, each later one thinner on top) and the legend names
    the cell each repeats, so no line hides another; the legend sits outside the axes."""
    from matplotlib.figure import Figure

    methods = sorted({str(r["method"]) for r in rows})
    others = sorted({_variant(r) for r in rows})
    curves = {
        r["name"]: [(b / 1e6, a) for b, a in r.get("curve", ()) if a is not None] for r in rows
    }
    twins = overlap_groups(curves)
    fig = Figure(figsize=(9, 4.8), dpi=110)
    ax = fig.add_subplot()
    for row in rows:
        points = curves[row["name"]]
        if not points:
            continue
        k = others.index(_variant(row))
        ax.plot(
            *zip(*points),
            color=f"C{methods.index(str(row['method'])) % 10}",
            linestyle=LINE_STYLES[k % len(LINE_STYLES)],
            marker=MARKERS[k % len(MARKERS)],
            label=halo_label(row["name"], twins),
            **halo_style(row["name"], twins),
        )
    failed = sum(1 for r in rows if r.get("error"))
    title = f"sweep: accuracy against traffic ({len(rows)} cells"
    ax.set_title(title + (f", {failed} failed)" if failed else ")"))
    ax.set_xlabel("MB sent by all peers (cumulative, log scale)")
    bases = sorted({str(r.get("accuracy_on")) for r in rows if r.get("accuracy_on")})
    on = bases[0] if len(bases) == 1 else "each cell's basis (see sweep.md)"
    ax.set_ylabel(f"mean accuracy, {on} test data" if len(bases) == 1 else f"mean accuracy, {on}")
    _mb_axis(ax, [x for points in curves.values() for x, _ in points])
    ax.grid(alpha=0.3)
    if twins:
        ax.legend(
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            ncol=1 + len(rows) // 25,  # a long sweep's legend wraps into columns
        )
    fig.savefig(str(path), bbox_inches="tight")


def _mb_axis(ax: Any, xs: list[float]) -> None:
    """A log MB axis with plain-number ticks (0.05, 0.1, 0.2, ...); symlog when a value is 0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if xs and min(xs) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif xs:
        ax.set_xscale("symlog", linthresh=0.01)
    else:
        ax.text(0.5, 0.5, "no finished cell yet", transform=ax.transAxes, ha="center")


def _variant(row: dict[str, Any]) -> str:
    return f"{row.get('topology')}/{row.get('seed')}/{row.get('faults')}"
