"""Methods on MNIST: final accuracy, MB sent to reach 90 % of the all-reduce accuracy, density.

16 peers; ring and small-world; IID and Dirichlet(0.3); dense, vc, spafl, fedsparsify, choco
and the all-reduce reference. One JSON object per run; the accuracy-vs-MB plot is saved.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/mnist_5k.csv.gz")
    parser.add_argument("--methods", default="allreduce,dense,vc,spafl,fedsparsify,choco")
    parser.add_argument("--topologies", default="ring,smallworld")
    parser.add_argument("--partitions", default="iid,dirichlet:0.3")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--plot", default="benchmarks/methods.png")
    args = parser.parse_args()
    import torch

    from spargo.sims import Scenario, run

    torch.set_num_threads(1)
    curves: dict[str, list[tuple[float, float]]] = {}
    for partition in args.partitions.split(","):
        for topo in args.topologies.split(","):
            reference = None
            for method in args.methods.split(","):
                scenario = Scenario(
                    nodes=16, topology=topo, method=method,
                    rounds=args.rounds, task=f"mnist:{args.data}", partition=partition,
                )  # fmt: skip
                try:
                    result = run(scenario)
                except ValueError as exc:
                    print(json.dumps({"method": method, "error": str(exc)}), flush=True)
                    continue
                s = result.summary
                if method == "allreduce":
                    reference = s["accuracy_mean"]
                target = None if reference is None else 0.9 * reference
                reach = next(
                    (r["bytes_sent_total"] for r in result.round_stats
                     if target is not None and (r["global_accuracy_mean"] or 0) >= target),
                    None,
                )  # fmt: skip
                row = {
                    "method": method, "topology": topo, "partition": partition,
                    "accuracy": s["accuracy_mean"], "accuracy_on": s["accuracy_on"],
                    "global_accuracy": s["global_accuracy_mean"], "density": s["density"],
                    "mb_sent": round(s["bytes_sent_total"] / 1e6, 2),
                    "mb_to_90pct_allreduce": None if reach is None else round(reach / 1e6, 2),
                    "wall_s": s["wall_s"],
                }  # fmt: skip
                print(json.dumps(row), flush=True)
                curves[f"{method} {topo} {partition}"] = [
                    (r["bytes_sent_total"] / 1e6, r["global_accuracy_mean"] or 0.0)
                    for r in result.round_stats
                ]
    _plot(curves, args.plot)


def _plot(curves: dict[str, list[tuple[float, float]]], path: str) -> None:
    """One panel per (topology, partition); per method one colour, line style and marker:
    accuracy vs MB sent. Methods with the same curve are drawn as halos and named in the
    legend (one, beside the panels), so none hides another."""
    from matplotlib.figure import Figure

    from spargo.sims.plotting import LINE_STYLES, MARKERS, halo_style, overlap_groups

    panels = sorted({label.split(" ", 1)[1] for label in curves})
    methods = sorted({label.split(" ", 1)[0] for label in curves})
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(6 * cols, 4 * rows), dpi=100)
    handles: dict[str, object] = {}
    for index, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, index + 1)
        mine = {m: curves[f"{m} {panel}"] for m in methods if curves.get(f"{m} {panel}")}
        groups = overlap_groups(mine)
        for method, points in mine.items():
            i = methods.index(method)
            (line,) = ax.plot(
                *zip(*points),
                color=f"C{i % 10}",
                linestyle=LINE_STYLES[i % len(LINE_STYLES)],
                marker=MARKERS[i % len(MARKERS)],
                markevery=max(1, len(points) // 8),
                **halo_style(method, groups),
            )
            handles.setdefault(method, line)
        ax.set_xscale("log")
        ax.set_title(panel)
        ax.set_xlabel("MB sent by all peers (cumulative, log scale)")
        ax.set_ylabel("mean accuracy (fraction correct)")
        ax.grid(alpha=0.3)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper left",
        bbox_to_anchor=(1.0, 0.95),
        title="method",
    )
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")


if __name__ == "__main__":
    main()
