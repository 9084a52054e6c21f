"""The ``spargo`` command: ``sim`` (default job), ``topology``, and the real-network tools.

Heavy modules (torch, the node) are imported inside the subcommand that needs them, so
``spargo --help`` and ``spargo topology`` start fast. Any configuration error is printed as
one line ``spargo <cmd>: error: ...`` and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``spargo sim``."""
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
    p.add_argument("--nodes", type=int, help="number of peers (default 16)")
    p.add_argument("--topology", help="ring, smallworld, regular:4, er:0.2, ... or a graph file")
    _add_graph_file_flags(p)
    p.add_argument("--method", help="dense, vc, spafl, fedsparsify, choco, allreduce")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, repeatable (e.g. --option weights_every=3)",
    )
    p.add_argument("--rounds", type=int, help="gossip rounds (async: training bursts per peer)")
    p.add_argument("--local-steps", type=int, help="local SGD steps per round")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--task", help="digits, synthetic, mnist:PATH or module:function")
    p.add_argument("--partition", help="iid, dirichlet:ALPHA, shards:K")
    p.add_argument("--sampler", help="all, random:K, exponential")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--distinct-init",
        action="store_true",
        default=None,
        help="start every peer from its own random model",
    )
    p.add_argument("--eval-every", type=int, help="evaluate every K rounds")
    p.add_argument("--name", help="run name (the output folder under runs/)")
    _add_mode_flags(p)
    _add_fault_flags(p)
    p.add_argument("--sweep", metavar="FILE", help="run a grid of scenarios (TOML) in parallel")
    p.add_argument("--workers", type=int, default=0, help="sweep processes (default: CPUs)")
    p.add_argument("--out", help="output folder (default runs/<name or timestamp>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    p.add_argument("--quiet", action="store_true", help="no per-round lines, no progress bar")
    from spargo.node.web.options import add_web_flags

    add_web_flags(p)


def _add_graph_file_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        dest="topology_format",
        metavar="NAME",
        help="graph file format: edgelist, csv, adjlist, gml, gexf, pajek, graphml, json, mtx "
        "(default: detected)",
    )
    p.add_argument(
        "--directed",
        action="store_true",
        default=None,
        help="read the graph file as arcs; gossip follows them (push-sum for one-way arcs)",
    )
    p.add_argument(
        "--latency-from",
        metavar="geo[:KM_PER_MS]",
        help="link latency from node coordinates (200 km/ms; --latency-ms is the base)",
    )


def _add_mode_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("timing")
    g.add_argument(
        "--mode",
        help="rounds (lock-step, default) or async (own clocks, merge on arrival)",
    )
    g.add_argument(
        "--train-period-s", type=float, help="async: idle seconds after each training burst"
    )
    g.add_argument("--gossip-period-s", type=float, help="async: seconds between gossip sends")
    g.add_argument(
        "--poisson",
        action="store_true",
        default=None,
        help="async: exponential waits (Poisson clocks) instead of fixed periods",
    )
    g.add_argument("--max-staleness", type=int, help="drop messages more than this many rounds old")
    g.add_argument("--duration-s", type=float, help="async: stop every peer at this simulated time")


def _add_fault_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("faults")
    g.add_argument("--latency-ms", type=float, help="link latency in ms")
    g.add_argument("--jitter-ms", type=float, help="extra uniform delay 0..J ms per message")
    g.add_argument("--bandwidth-mbps", type=float, help="link bandwidth in Mbit/s (0 = unlimited)")
    g.add_argument("--loss", type=float, help="message loss probability in [0, 1)")
    g.add_argument("--churn", type=float, help="per peer and round probability of going down")
    g.add_argument("--churn-mode", help="leave (graceful), fail (crash) or mixed")
    g.add_argument("--churn-downtime", type=int, help="rounds a churned peer stays away")
    g.add_argument("--partition-at", metavar="ROUND:HEAL_ROUND", help="split, then heal")
    g.add_argument("--step-time-s", type=float, help="simulated compute time per local step")
    g.add_argument("--speed-spread", type=float, help="lognormal spread of device speeds")
    g.add_argument("--attack", help="scale:K, signflip, random, nan or replay")
    g.add_argument("--attackers", type=float, help="fraction of misbehaving peers")


#: Flags copied into the scenario when given (argparse dest -> scenario key).
_SCENARIO_FLAGS = (
    "nodes", "topology", "method", "rounds", "local_steps", "batch_size", "lr", "task",
    "partition", "sampler", "seed", "distinct_init", "eval_every", "name", "latency_ms",
    "jitter_ms", "bandwidth_mbps", "loss", "churn", "churn_mode", "churn_downtime",
    "partition_at", "step_time_s", "speed_spread", "attack", "attackers", "mode",
    "train_period_s", "gossip_period_s", "max_staleness", "duration_s", "poisson",
    "topology_format", "directed", "latency_from",
)  # fmt: skip


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option {text!r} must look like KEY=VALUE (e.g. weights_every=3)")
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    return key, raw


def _scenario_from_args(args: argparse.Namespace) -> Any:
    from spargo.node.config import load_toml
    from spargo.sims.scenario import (
        Scenario,
        default_method_options,
        scenario_from_mapping,
        shipped_scenario,
    )

    base: dict[str, Any] = {}
    if args.config and args.scenario:
        raise ValueError("give --config FILE or --scenario NAME, not both")
    if args.scenario:
        base = dict(load_toml(shipped_scenario(args.scenario)))
    elif args.config:
        base = dict(load_toml(args.config))
    flags = {key: getattr(args, key) for key in _SCENARIO_FLAGS}
    base.update({k: v for k, v in flags.items() if v is not None})
    # The default run (no method named) is SpaFL with weights every third round; a method
    # named by flag or file runs with its own defaults (`--method spafl`: thresholds only).
    named = "method" in base
    if named or args.option:
        method = base.get("method", Scenario.method)
        fallback = {} if named else default_method_options(method)
        options = dict(base.get("method_options", fallback))
        options.update(_parse_option(o) for o in args.option)
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
    """``spargo sim``: run a scenario (or a sweep), print progress and a summary, write reports."""
    if args.sweep:
        return _run_sweep(args)
    if args.scenario == "list":
        from spargo.sims.scenario import shipped_scenarios

        for name, path in shipped_scenarios().items():
            about = _first_comment(path)
            if len(about) > 66:  # one line each at 80 columns
                about = about[:65].rstrip() + "…"
            print(f"{name:<13} {about}")
        return 0
    scenario = _scenario_from_args(args)
    dashboard = _dashboard(args, scenario)
    out_dir = Path(args.out or _default_out(scenario))
    from rich.console import Console

    from spargo.sims.progress import Progress
    from spargo.sims.report import summary_table, write_reports
    from spargo.sims.runner import run
    from spargo.sims.scenario import accuracy_basis

    with Progress(
        scenario.rounds,
        lines=not args.quiet,
        bar=not args.quiet,
        basis=accuracy_basis(scenario.method),
    ) as progress:
        result = run(scenario, on_round=dashboard.chain(progress.update))
    write_reports(result, out_dir, plots=not args.no_plots)
    s = result.summary
    if not args.quiet:
        Console(highlight=False, width=110).print(
            summary_table([s], title=f"spargo sim — {out_dir}")
        )
    print(
        f"{s['nodes']} peers, {s['topology']}, {s['method']}, {s['rounds']} rounds"
        f"{' (async)' if s['mode'] == 'async' else ''}: "
        f"accuracy mean {_f(s['accuracy_mean'])} (min {_f(s['accuracy_min'])}, "
        f"max {_f(s['accuracy_max'])}, {s['accuracy_on']}"
        f"{_other_basis(s)}), density {_f(s['density'])}, "
        f"{s['bytes_sent_total'] / 1e6:.2f} MB in {s['messages_sent']} messages, "
        f"{s['messages_dropped']} dropped, {s['wall_s']:.1f} s; reports in {out_dir}"
    )
    if args.json:
        print(json.dumps(s, sort_keys=True))
    dashboard.hold()
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
    basis = accuracy_basis(scenario.method)
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


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _default_out(scenario: Any) -> str:
    if scenario.name:
        return f"runs/{scenario.name}"
    return f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{scenario.label}"


def _run_sweep(args: argparse.Namespace) -> int:
    from spargo.sims.sweep import run_sweep

    if args.workers < 0:
        raise ValueError("--workers must be >= 0 (0 = one per CPU)")
    out_dir = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    rows = run_sweep(args.sweep, out_dir, workers=args.workers)
    print((out_dir / "sweep.md").read_text(), end="")
    print(f"{len(rows)} runs; table in {out_dir / 'sweep.md'}, plot in {out_dir / 'sweep.png'}")
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "curve"} for r in rows]))
    return 0
