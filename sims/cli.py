"""The ``spargo`` command: ``sim`` (default job), ``topology``, and the real-network tools.

Heavy modules (torch, the node) are imported inside the subcommand that needs them, so
``spargo --help`` and ``spargo topology`` start fast. Any configuration error is printed as
one line ``spargo <cmd>: error: ...`` and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from spargo.sims import trackers


def add_parser(subparsers: Any) -> None:
    """Register ``spargo sim``: the run's own flags, then one flag per scenario field."""
    from spargo.sims.flags import add_scenario_flags

    p = subparsers.add_parser(
        "sim",
        help="simulate N peers in one process (the default job)",
        description="Run N real peers on in-memory transports on a virtual clock.",
    )
    p.add_argument("--config", help="scenario TOML file; flags override its values")
    p.add_argument(
        "--scenario",
        metavar="NAME",
        help="a scenario shipped with spargo, by name ('--scenario list' shows them)",
    )
    p.add_argument("--sweep", metavar="FILE", help="run a grid of scenarios (TOML) in parallel")
    p.add_argument("--workers", type=int, default=0, help="sweep: cells at once (default: CPUs)")
    p.add_argument(
        "--resume", action="store_true", help="sweep: skip cells whose summary.json exists"
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        nargs="?",
        const="",
        help="sweep: run the cells as Ray tasks, on a local Ray instance (--workers CPUs) "
        "or the cluster at ADDRESS: auto, HOST:PORT or ray://HOST:PORT (needs spargo[ray])",
    )
    p.add_argument("--out", help="output folder (default runs/<name or timestamp>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--json", action="store_true", help="stdout carries only the summary as one JSON object"
    )
    p.add_argument("--quiet", action="store_true", help="no per-round lines, no progress bar")
    add_scenario_flags(p)
    trackers.add_flags(p)  # --tensorboard DIR, --mlflow [URI]
    from spargo.node.web.options import add_web_flags

    add_web_flags(p)  # --web [HOST:]PORT: the live dashboard of this run


def _scenario_from_args(args: argparse.Namespace) -> Any:
    from spargo.node.config import load_toml
    from spargo.sims.flags import flag_values
    from spargo.sims.scenario import (
        Scenario,
        default_method_options,
        scenario_from_mapping,
    )

    base: dict[str, Any] = {}
    if args.config and args.scenario:
        raise ValueError("give --config FILE or --scenario NAME, not both")
    if args.scenario:
        from spargo.sims.shipped import shipped_scenario

        base = dict(load_toml(shipped_scenario(args.scenario)))
    elif args.config:
        base = dict(load_toml(args.config))
    base.update(flag_values(args))
    given_options = list(args.method_options or [])
    # The default run (no method named) is SpaFL with weights every second round; a method
    # named by flag or file runs with its own defaults (`--method spafl`: thresholds only).
    named = "method" in base
    if named or given_options:
        method = base.get("method", Scenario.method)
        fallback = {} if named else default_method_options(method)
        options = dict(base.get("method_options", fallback))
        options.update(given_options)
        base["method_options"] = options
    _resolve_nodes_from_graph_file(base)
    source = f"scenario {args.scenario!r}" if args.scenario else args.config or "flags"
    return scenario_from_mapping(base, source=source)


def _resolve_nodes_from_graph_file(values: dict[str, Any]) -> None:
    from spargo import topology

    spec = values.get("topology")
    if spec is None:
        return
    size = topology.graph_size_from_spec(spec, values.get("topology_format"))
    if size is not None and values.get("nodes") is None:
        values["nodes"] = size


def run(args: argparse.Namespace) -> int:
    """``spargo sim``: run a scenario (or a sweep), print progress and a summary, write reports.

    Exit status: 0 done, 1 a sweep cell failed, 2 bad input, 130 stopped by Ctrl-C/SIGTERM
    (the files then hold the rounds done and ``summary.json`` says ``"interrupted": true``),
    141 stdout closed early (``| head``: quietly, as a SIGPIPE'd command ends).
    """
    try:
        return _run(args)
    except BrokenPipeError:
        _silence_stdout()
        return 141


def _run(args: argparse.Namespace) -> int:
    if args.ray is not None and not args.sweep:
        raise ValueError("--ray runs the cells of a sweep as Ray tasks: give --sweep FILE too")
    if args.sweep:
        _user_tasks_from_cwd()  # before the workers start: they inherit the path
        return _run_sweep(args)
    if args.scenario == "list":
        return _list_scenarios()
    scenario = _scenario_from_args(args)
    if _is_user_task(scenario.task):
        _user_tasks_from_cwd()
    out_dir = _out_dir(args, scenario)
    dashboard = _dashboard(args, scenario)
    from spargo.sims.progress import RoundProgress
    from spargo.sims.report import RunWriter
    from spargo.sims.runner import StopFlag, run
    from spargo.sims.scenario import accuracy_basis

    human = sys.stderr if args.json else sys.stdout
    stop = StopFlag()
    writer = RunWriter(out_dir)
    progress = RoundProgress(
        scenario.rounds,
        lines=not args.quiet,
        bar=not args.quiet,
        basis=accuracy_basis(scenario),
        to_stderr=args.json,
        on_broken_pipe=lambda: stop.request("stdout closed"),
    )
    # Per-round callbacks, in order: files first, then the screen; experiment trackers
    # append theirs here.
    on_row: list[Callable[[dict[str, Any]], None]] = [writer.row, progress.row]

    def each_row(row: dict[str, Any]) -> None:
        for hook in on_row:
            hook(row)

    # The trackers of an interrupted or failed run are closed as KILLED or FAILED.
    tracked = trackers.TrackerSpec.from_args(args, out_dir).open(out_dir.name)
    try:
        with _stop_on_signals(stop), tracked, progress:
            result = run(
                scenario,
                on_round=dashboard.feed,
                on_record=writer.record,
                on_row=each_row,
                stop=stop,
                trackers=tracked,
            )
    finally:
        writer.close()
    writer.finish(result, plots=not args.no_plots)
    status = _report(args, result.summary, out_dir, stop, human)
    dashboard.hold()  # with --web in a terminal, the page stays up until Ctrl-C
    return status


def _report(
    args: argparse.Namespace, s: dict[str, Any], out_dir: Path, stop: Any, human: TextIO
) -> int:
    """Print the summary (the table, one line, the JSON object); returns the exit status."""
    if stop.reason == "stdout closed":
        _silence_stdout()
        return 141
    try:
        if s["interrupted"]:
            print(
                f"spargo sim: interrupted after {s['rounds_done']} of {s['rounds']} rounds; "
                f"partial reports in {out_dir}",
                file=sys.stderr,
            )
        else:
            if not args.quiet:
                from rich.console import Console

                from spargo.sims.report import summary_table

                Console(file=human, highlight=False).print(
                    summary_table([s], title=f"spargo sim — {out_dir}")
                )
            print(_fit(_summary_line(s, out_dir), human), file=human)
        if args.json:
            from spargo.node.metrics import strict_json  # NaN of a diverged run: null

            print(strict_json(s, sort_keys=True), flush=True)
    except BrokenPipeError:
        _silence_stdout()
        return 141
    return 130 if s["interrupted"] else 0


def _fit(line: str, stream: Any) -> str:
    """``line`` wrapped at word boundaries to a terminal's width (unchanged when ``stream`` is
    not a terminal, so pipes and logs keep one line per run)."""
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return line
    import shutil
    import textwrap

    width = shutil.get_terminal_size().columns
    return textwrap.fill(line, width=width, break_long_words=False, break_on_hyphens=False)


def _summary_line(s: dict[str, Any], out_dir: Path) -> str:
    return (
        f"{s['nodes']} peers, {s['topology']}, {s['method']}, {s['rounds']} rounds"
        f"{' (async)' if s['mode'] == 'async' else ''}: "
        f"accuracy mean {_f(s['accuracy_mean'])} (min {_f(s['accuracy_min'])}, "
        f"max {_f(s['accuracy_max'])}, {s['accuracy_on']}"
        f"{_other_basis(s)}{_sampled(s)}), density {_f(s['density'])}, "
        f"{s['bytes_sent_total'] / 1e6:.2f} MB in {s['messages_sent']} messages, "
        f"{s['messages_dropped']} dropped, {s['wall_s']:.1f} s; reports in {out_dir}"
    )


@contextlib.contextmanager
def _stop_on_signals(stop: Any) -> Iterator[None]:
    """SIGINT/SIGTERM ask the run to stop cleanly; a second one stops it at once."""

    def handler(signum: int, _frame: object) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request("interrupted")

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals; Ctrl-C then stops the run at once
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _silence_stdout() -> None:
    """The reader of stdout went away: point stdout at /dev/null so the interpreter's final
    flush raises nothing (Python's documented recipe for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _is_user_task(task: str) -> bool:
    """``module:function`` (not a built-in ``mnist:PATH`` or ``synthetic:N``)."""
    return ":" in task and task.partition(":")[0] not in ("mnist", "synthetic")


def _user_tasks_from_cwd() -> None:
    """``--task module:function`` finds a module in the working directory, as ``python -m``
    does (the console script's own directory is on the path instead)."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def _out_dir(args: argparse.Namespace, scenario: Any) -> Path:
    """The run folder: ``--out``, else ``runs/<name>``, else a timestamped one (suffixed
    ``-2``, ``-3``... when taken). A folder that already holds a run is refused."""
    if args.out or scenario.name:
        out = Path(args.out or f"runs/{scenario.name}")
        if (out / "summary.json").exists() or (out / "rounds.jsonl").exists():
            flag = "--out" if args.out else "--name"
            raise ValueError(
                f"{out} already holds a run; choose another {flag} or remove the folder"
            )
        return out
    base = f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{scenario.label}"
    out, n = Path(base), 1
    while out.exists():
        n += 1
        out = Path(f"{base}-{n}")
    return out


def _list_scenarios() -> int:
    from spargo.sims.shipped import shipped_scenarios

    for name, path in shipped_scenarios().items():
        about = _first_comment(path)
        if len(about) > 66:  # one line each at 80 columns
            about = about[:65].rstrip() + "…"
        print(f"{name:<13} {about}")
    return 0


def _dashboard(args: argparse.Namespace, scenario: Any) -> Any:
    """``--web``: the live page of this run, fed from the per-round callback."""
    from spargo.node.web.feed import SimDashboard
    from spargo.node.web.options import web_options

    options = web_options(args)
    if options is None:
        return SimDashboard(None, scenario.label)
    from spargo import topology
    from spargo.sims.graphs import swarm_graph
    from spargo.sims.scenario import accuracy_basis
    from spargo.sims.swarm import peer_ids

    graph = swarm_graph(scenario)
    ids = topology.file_peer_ids(graph) or peer_ids(graph.number_of_nodes())
    basis = accuracy_basis(scenario)
    return SimDashboard(options, scenario.label, graph, ids, basis)


def _first_comment(path: Path) -> str:
    """A shipped scenario's first comment line: what it is for."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _other_basis(s: dict[str, Any]) -> str:
    """For personalised runs, also show the global figure (and vice versa): hide nothing."""
    other = "global" if s["accuracy_on"] == "local" else "local"
    value = s.get(f"{other}_accuracy_mean")
    return "" if value is None else f"; {other} mean {_f(value)}"


def _sampled(s: dict[str, Any]) -> str:
    """The batched engine's sampled evaluation: say that the figures are a sample's."""
    k = s.get("eval_peers", "all")
    return "" if k == "all" else f"; a sample of {k} peers"


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _run_sweep(args: argparse.Namespace) -> int:
    from spargo.sims.sweep import run_sweep

    if args.workers < 0:
        raise ValueError("--workers must be >= 0 (0 = one per CPU)")
    if args.ray is not None:
        from spargo.sims.sweep_ray import prepare

        prepare(args.ray)  # a malformed address or no Ray fails before anything runs
    out_dir = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    human = sys.stderr if args.json else sys.stdout
    spec = trackers.TrackerSpec.from_args(args, out_dir, sweep=True)
    spec.prepare()  # a missing extra or a bad store fails here, before any cell runs
    rows = run_sweep(
        args.sweep, out_dir, args.workers, resume=args.resume, trackers=spec, ray=args.ray
    )
    failed = [r for r in rows if r.get("error")]
    from rich.console import Console

    from spargo.sims.report import summary_table

    Console(file=human, highlight=False).print(summary_table(rows, title=f"sweep — {out_dir}"))
    for row in failed:
        print(f"FAILED {row['name']}: {row['error']}", file=human)
    print(
        f"{len(rows)} runs ({len(failed)} failed); table in {out_dir / 'sweep.md'}, "
        f"plot in {out_dir / 'sweep.png'}",
        file=human,
    )
    if args.json:
        runs = [{k: v for k, v in r.items() if k != "curve"} for r in rows]
        print(json.dumps({"out": str(out_dir), "failed": len(failed), "runs": runs}))
    return 1 if failed else 0
