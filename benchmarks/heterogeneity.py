"""Label-skewed peers: gossip methods against the all-reduce ceiling, accuracy per byte.

MNIST-5k, 16 peers, Dirichlet(0.3) and IID partitions, ring and small-world graphs, 60
rounds, ``--seeds`` seeds. Prints one JSON object per run (method, partition, topology,
seed, final global and local accuracy, bytes sent, consensus distance, the per-round
curve), then a table per (partition, topology): final global accuracy mean ± sd, total MB,
MB to reach 95 % of all-reduce's final accuracy, consensus distance and the share of dense
D-PSGD's bytes; and saves a plot of accuracy vs MB on the Dirichlet-0.3 ring.

    nice -n 10 python benchmarks/heterogeneity.py --data PATH/mnist_5k.csv.gz > runs.jsonl
    python benchmarks/heterogeneity.py --load runs.jsonl        # table and plot only

``--method-options 'cgt:ratio=0.1,value_dtype=int8'`` overrides a method's options (run
names then carry the overrides); ``gossip_steps=Q`` among them sets the run's gossip steps per
round (docs/algorithms.md §4.10), e.g. ``'cgt:gossip_steps=3'``. docs/algorithms.md §10
describe the tracking methods.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Run = dict[str, Any]
DEFAULT_METHODS = "allreduce,dense,choco,tracking,cgt"


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    for flag, value, low in (
        ("--seeds", args.seeds, 1),
        ("--rounds", args.rounds, 1),
        ("--nodes", args.nodes, 2),
        ("--first-seed", args.first_seed, 0),
    ):
        if value < low:
            parser.error(f"{flag} {value} must be >= {low}")
    if args.load and not Path(args.load).is_file():
        parser.error(f"--load {args.load!r} is not a file")
    if args.load:
        runs = [json.loads(line) for line in Path(args.load).read_text().splitlines() if line]
    else:
        runs = list(_run_grid(args))
    runs = [r for r in runs if "error" not in r]
    print(table(runs))
    if runs and args.plot:
        _plot(runs, args.plot)
        print(f"plot: {args.plot}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/mnist_5k.csv.gz", help="MNIST-5k csv.gz")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method names")
    p.add_argument("--method-options", default="", help="'method:k=v,k=v;method2:k=v'")
    p.add_argument("--topologies", default="ring,smallworld")
    p.add_argument("--partitions", default="dirichlet:0.3,iid")
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--seeds", type=int, default=3, help="how many seeds")
    p.add_argument("--first-seed", type=int, default=0, help="seeds first..first+N-1")
    p.add_argument("--nodes", type=int, default=16)
    p.add_argument("--plot", default="benchmarks/heterogeneity.png")
    p.add_argument("--load", default="", help="read runs (JSON lines) instead of running")
    p.add_argument(
        "--engine", choices=("node", "batched"), default="node",
        help="simulation engine (batched: one tensor program, equal results, faster)",
    )  # fmt: skip
    return p


def _options(spec: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for part in filter(None, spec.split(";")):
        method, _, pairs = part.partition(":")
        out[method.strip()] = dict(kv.split("=", 1) for kv in pairs.split(",") if "=" in kv)
    return out


def _run_grid(args: argparse.Namespace) -> Iterable[Run]:
    import torch

    from spargo.sims import Scenario, run

    if not Path(args.data).is_file():
        print(f"--data {args.data!r} is not a file (MNIST-5k csv.gz)", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    overrides = _options(args.method_options)
    for partition in args.partitions.split(","):
        for topo in args.topologies.split(","):
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for method in args.methods.split(","):
                    options = overrides.get(method, {})
                    name = method + "".join(f" {k}={v}" for k, v in sorted(options.items()))
                    try:
                        method_options = dict(options)
                        steps = method_options.pop("gossip_steps", "1")  # a Scenario field
                        scenario = Scenario(
                            nodes=args.nodes, topology=topo, method=method, rounds=args.rounds,
                            task=f"mnist:{args.data}", partition=partition, seed=seed,
                            method_options=method_options,
                            gossip_steps=int(steps),  # not a whole number: an error row
                            engine=args.engine,
                        )  # fmt: skip
                        result = run(scenario)
                    except ValueError as exc:
                        row: Run = {"method": name, "error": str(exc)}
                    else:
                        row = _row(name, partition, topo, seed, result)
                    print(json.dumps(row), flush=True)
                    yield row


def _row(method: str, partition: str, topo: str, seed: int, result: Any) -> Run:
    s = result.summary
    last = result.round_stats[-1] if result.round_stats else {}
    return {
        "method": method, "partition": partition, "topology": topo, "seed": seed,
        "global_accuracy_mean": s["global_accuracy_mean"],
        "local_accuracy_mean": s.get("local_accuracy_mean"),
        "bytes_sent_total": s["bytes_sent_total"],
        "consensus_distance": last.get("consensus_distance"),
        "curve": [
            [r["round"], r["global_accuracy_mean"], r["bytes_sent_total"]]
            for r in result.round_stats
        ],
    }  # fmt: skip


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def reach_bytes(curve: Sequence[Sequence[float]], target: float) -> float | None:
    """Bytes sent when the global accuracy first reaches ``target`` (None if never)."""
    return next((b for _, acc, b in curve if acc is not None and acc >= target), None)


def table(runs: Sequence[Run]) -> str:
    """One markdown table per (partition, topology), methods in first-seen order."""
    lines: list[str] = []
    cells = dict.fromkeys((r["partition"], r["topology"]) for r in runs)
    for partition, topo in cells:
        here = [r for r in runs if r["partition"] == partition and r["topology"] == topo]
        ref = [r["global_accuracy_mean"] for r in here if r["method"] == "allreduce"]
        target = 0.95 * _mean_sd(ref)[0] if ref else None
        dense = [r["bytes_sent_total"] for r in here if r["method"] == "dense"]
        dense_b = _mean_sd(dense)[0] if dense else None
        seeds = len({r["seed"] for r in here})
        lines += [
            f"\n{partition}, {topo} ({seeds} seed{'s' * (seeds > 1)}; 95 % of all-reduce = "
            + (f"{target:.3f})" if target else "n/a)"),
            "| method | global acc. | MB sent | % of dense | MB to 95 % | consensus |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for method in dict.fromkeys(r["method"] for r in here):
            lines.append(_line(method, [r for r in here if r["method"] == method], target, dense_b))
    return "\n".join(lines)


def _line(method: str, rs: Sequence[Run], target: float | None, dense_b: float | None) -> str:
    acc, sd = _mean_sd([r["global_accuracy_mean"] for r in rs])
    mb = _mean_sd([r["bytes_sent_total"] for r in rs])[0]
    share = f"{100 * mb / dense_b:.1f}" if dense_b else "–"
    reach = [reach_bytes(r["curve"], target) if target else None for r in rs]
    got = [b for b in reach if b is not None]
    to95 = (f"{_mean_sd(got)[0] / 1e6:.1f}" if got else "never") + (
        f" ({len(got)}/{len(rs)})" if got and len(got) < len(rs) else ""
    )
    cds = [r["consensus_distance"] for r in rs if r["consensus_distance"] is not None]
    cd = f"{_mean_sd(cds)[0]:.3g}" if cds else "–"
    return f"| {method} | {acc:.3f} ± {sd:.3f} | {mb / 1e6:.1f} | {share} | {to95} | {cd} |"


#: One colour per method (tab10, then four more): fourteen methods, none sharing a colour.
COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#b8860b", "#ff1493", "#556b2f",
)  # fmt: skip


def _plot(runs: Sequence[Run], path: str, partition: str = "dirichlet:0.3") -> None:
    """Accuracy vs MB (log scale) on the ring: one line per method, the mean over seeds; a
    method that sends nothing (``local``) is a horizontal line at its final accuracy, and the
    issue's target (all-reduce's final accuracy − 1 point, 10 % of D-PSGD's bytes) is marked."""
    from matplotlib.figure import Figure

    from spargo.sims.plotting import LINE_STYLES, MARKERS

    ring = [r for r in runs if r["partition"] == partition and r["topology"] == "ring"]
    fig = Figure(figsize=(10, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for index, method in enumerate(dict.fromkeys(r["method"] for r in ring)):
        curves = [r["curve"] for r in ring if r["method"] == method]
        n = min(len(c) for c in curves)
        if curves[0][n - 1][2] < 1e5:  # only Hellos (local): no place on a log axis of MB
            final = sum(c[n - 1][1] or 0.0 for c in curves) / len(curves)
            ax.axhline(
                final, color="grey", linestyle=":", label=f"{method} (no gossip): {final:.3f}"
            )
            continue
        mb = [sum(c[i][2] for c in curves) / len(curves) / 1e6 for i in range(n)]
        acc = [sum(c[i][1] or 0.0 for c in curves) / len(curves) for i in range(n)]
        ax.plot(
            mb, acc, label=f"{method} ({len(curves)} seeds)",
            linestyle=LINE_STYLES[index % len(LINE_STYLES)], color=COLOURS[index % len(COLOURS)],
            marker=MARKERS[index % len(MARKERS)], markersize=3, markevery=max(1, n // 12),
        )  # fmt: skip
    ceiling = [r["global_accuracy_mean"] for r in ring if r["method"] == "allreduce"]
    dense = [r["bytes_sent_total"] for r in ring if r["method"] == "dense"]
    if ceiling and dense:
        goal = sum(ceiling) / len(ceiling) - 0.01
        budget = 0.1 * sum(dense) / len(dense) / 1e6
        ax.axhline(goal, color="black", linewidth=0.8, alpha=0.6, label="target: all-reduce − 1 pt")
        ax.axvline(
            budget, color="black", linewidth=0.8, alpha=0.6, linestyle="--",
            label="10 % of D-PSGD's bytes",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("MB sent by all peers (log scale)")
    ax.set_ylabel("global test accuracy (mean over peers)")
    ax.set_title(f"MNIST-5k, 16 peers, {partition}, ring")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
