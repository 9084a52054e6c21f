"""Sweeps: a grid of scenarios (methods × topologies × seeds × faults) run in parallel.

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
global unless a cell sets it); the plot draws the headline and names its basis
(``sims/sweep_tables.py``).

One cell runner (``run_cell``), two executors that yield each cell as it ends: a process
pool on this machine (``pool_cells``, the default) and Ray tasks on a local Ray instance or
a cluster (``sims/sweep_ray.py``, ``spargo sim --sweep FILE --ray [ADDRESS]``). Both feed
the same loop (``_collect``), so progress lines, failed cells and tables are the same.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spargo.sims.scenario import Scenario, ScenarioError, scenario_from_mapping, slug

# write_tables and plot_sweep are this module's public names too (sweep_tables holds them).
from spargo.sims.sweep_tables import COLUMNS, write_all
from spargo.sims.sweep_tables import plot_sweep as plot_sweep
from spargo.sims.sweep_tables import write_tables as write_tables
from spargo.sims.trackers import TrackerSpec

if TYPE_CHECKING:
    from spargo.node.progress import Progress


def load_sweep(path: str | Path) -> list[tuple[str, Scenario]]:
    """The (fault-set name, scenario) pairs of a sweep file, checked before anything runs."""
    from spargo.node.config import load_toml

    data = load_toml(path, "--sweep file")
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


def run_cell(values: dict[str, Any], out_dir: str, trackers: TrackerSpec) -> dict[str, Any]:
    """Run one cell (its scenario as a plain dict) and write its reports to
    ``out_dir/<cell name>``; returns ``{"summary": ..., "curve": [(bytes, accuracy), ...]}``.
    The one cell runner of both executors (process pool, ``sims/sweep_ray.py``)."""
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
    ray: str | None = None,
) -> list[dict[str, Any]]:
    """Run every cell of the sweep file; returns one row per cell, in grid order.

    Each finished cell goes straight into ``sweep.csv``/``.md``/``.json``/``.png`` (so a
    stopped sweep leaves its table); a cell that raises is a row with its one-line ``error``
    and the others go on. With ``resume``, cells whose ``summary.json`` exists are not run
    again. Progress (cells done/total, ETA) goes to stderr. ``trackers``: experiment
    trackers, one tracker run per cell named by the cell. ``ray``: None runs the cells in a
    process pool of ``workers`` processes (0: one per CPU, at most one per cell); a string
    runs them as Ray tasks (``sims/sweep_ray.py``): ``""`` on a local Ray instance of
    ``workers`` CPUs, else on the cluster at that address (``auto``, ``ray://HOST:PORT``,
    ``HOST:PORT``). Raises ``ScenarioError`` for a bad sweep file, ``ValueError`` for a
    malformed address, ``ConnectionError`` for a cluster that cannot be reached.
    """
    from spargo.node.progress import Progress

    runs = load_sweep(path)
    out = Path(out_dir)
    rows: list[dict[str, Any] | None] = [None] * len(runs)
    todo = []
    for i, (fault, scenario) in enumerate(runs):
        saved = _saved(out, scenario) if resume else None
        if saved is None:
            todo.append(i)
        else:
            rows[i] = _row(fault, scenario, saved)
    jobs = {i: (runs[i][1].to_dict(), str(out), trackers or TrackerSpec()) for i in todo}
    with contextlib.ExitStack() as stack:
        if ray is None or not jobs:  # all resumed: no Ray to start (no process starts)
            finished = pool_cells(jobs, run_cell, workers)
        else:
            from spargo.sims import sweep_ray

            # Connect (or start Ray) first: a bad cluster is one line, and no sweep folder.
            stack.enter_context(sweep_ray.ray_session(ray, workers or default_workers(len(jobs))))
            finished = sweep_ray.ray_cells(jobs, sweep_ray.run_cell_files, workers)
        out.mkdir(parents=True, exist_ok=True)
        with Progress(len(runs), label="sweep", unit="cells") as bar:
            if len(todo) < len(runs):
                bar.skip(len(runs) - len(todo), f"{len(runs) - len(todo)} resumed")
                write_all(rows, out)
            _collect(runs, rows, out, bar, finished)
    return [r for r in rows if r is not None]


#: What an executor yields as each cell ends: the cell's index and its result, or one line
#: that says why it has none (the exception raised in the cell, the worker's death).
Finished = Generator[tuple[int, dict[str, Any] | str], None, None]


def default_workers(cells: int) -> int:
    """Cells run at once when ``--workers`` is 0: one per CPU, at most one per cell."""
    return min(max(1, cells), multiprocessing.cpu_count())


def pool_cells(
    jobs: Mapping[int, tuple[Any, ...]], fn: Callable[..., dict[str, Any]], workers: int
) -> Finished:
    """Run ``fn(*args)`` for each ``index: args`` of ``jobs`` in ``workers`` spawned processes
    (0: ``default_workers``); yield each as it ends. Stopped early (Ctrl-C, or the consumer
    closes the generator), cells not started are dropped and those running finish."""
    context = multiprocessing.get_context("spawn")
    count = workers or default_workers(len(jobs))
    with ProcessPoolExecutor(count, mp_context=context, initializer=_init_worker) as pool:
        futures = {pool.submit(fn, *args): i for i, args in jobs.items()}
        try:
            for future in as_completed(futures):
                error = future.exception()  # the cell's own, or BrokenProcessPool
                yield futures[future], future.result() if error is None else _one_line(error)
        except BaseException:  # Ctrl-C or GeneratorExit: workers ignore Ctrl-C and finish
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _collect(
    runs: list[tuple[str, Scenario]],
    rows: list[dict[str, Any] | None],
    out: Path,
    bar: Progress,
    finished: Finished,
) -> None:
    """Fill ``rows`` and rewrite the tables as each cell of ``finished`` ends; a cell's failure
    is its row's one-line ``error``, not the sweep's end."""
    with contextlib.closing(finished):
        for i, outcome in finished:
            fault, scenario = runs[i]
            if isinstance(outcome, str):
                rows[i] = _row(fault, scenario, None, outcome)
            else:
                _land_files(out, outcome.pop("files", {}))
                rows[i] = _row(fault, scenario, outcome)
            write_all(rows, out)
            bar.update(status=scenario.label)
            bar.note(_cell_line(bar.done, len(runs), rows[i] or {}, bar.eta_text()))


def _land_files(out: Path, files: Mapping[str, bytes]) -> None:
    """Write a cell's report files that came back from a worker on another machine (paths
    relative to the sweep folder, as the worker wrote them)."""
    for name, data in files.items():
        target = out / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise RuntimeError(f"a sweep worker sent a file outside the sweep folder: {name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


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
