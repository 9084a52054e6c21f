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
    """One panel per (topology, partition), one colour per method: accuracy vs MB sent."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = sorted({label.split(" ", 1)[1] for label in curves})
    methods = sorted({label.split(" ", 1)[0] for label in curves})
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(6 * cols, 4 * rows))
    for index, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, index + 1)
        for method in methods:
            points = curves.get(f"{method} {panel}")
            if points:
                ax.plot(*zip(*points), label=method, color=colours[method], lw=1.2)
        ax.set_xscale("log")
        ax.set_title(panel)
        ax.set_xlabel("MB sent (all peers, cumulative)")
        ax.set_ylabel("mean accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(path)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
