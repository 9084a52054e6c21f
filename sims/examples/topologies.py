"""Topology comparison: ring vs small-world vs exponential vs complete, same method and data.

    python sims/examples/topologies.py --out runs/topologies

Prints a table (final accuracy, consensus distance, MB sent) and saves accuracy_vs_round.png.
Progress (topologies and rounds done, ETA) on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spargo.node.progress import Progress
from spargo.sims import Scenario, SimResult, run

TOPOLOGIES = ("ring", "smallworld", "exponential", "complete")


def run_topologies(method: str, rounds: int) -> dict[str, SimResult]:
    """Each topology, with one progress bar over all their rounds."""
    results = {}
    with Progress(len(TOPOLOGIES) * rounds, label="topologies", unit="rounds") as bar:
        for index, name in enumerate(TOPOLOGIES):
            scenario = Scenario(
                nodes=16, topology=name, method=method, method_options={}, rounds=rounds
            )

            def row(r: dict[str, Any], base: int = index * rounds, topo: str = name) -> None:
                acc = r["accuracy_mean"]
                shown = "n/a" if acc is None else f"{acc:.3f}"
                mb = r["bytes_sent_total"] / 1e6
                bar.update(base + r["round"] + 1, f"{topo}: accuracy {shown}, {mb:.1f} MB")

            results[name] = run(scenario, on_row=row)
            bar.note(f"{name}: done ({bar.eta_text()})")
    return results


def main() -> None:
    """Run the four topologies and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="vc")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default="runs/topologies")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_topologies(args.method, args.rounds)
    print(f"{'topology':<12} {'accuracy':>9} {'consensus':>10} {'MB sent':>9}")
    for name, result in results.items():
        s = result.summary
        print(
            f"{name:<12} {s['accuracy_mean']:>9.3f} {s['consensus_distance']:>10.4g} "
            f"{s['bytes_sent_total'] / 1e6:>9.2f}"
        )
    from matplotlib.figure import Figure

    from spargo.sims.plotting import LINE_STYLES, MARKERS, halo_label, halo_style, overlap_groups

    curves = {
        name: [
            (r["round"], r["accuracy_mean"])
            for r in result.round_stats
            if r["accuracy_mean"] is not None
        ]
        for name, result in results.items()
    }
    groups = overlap_groups(curves)
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(curves.items()):
        ax.plot(
            *zip(*points),
            color=f"C{i}",
            linestyle=LINE_STYLES[i % len(LINE_STYLES)],
            marker=MARKERS[i % len(MARKERS)],
            label=halo_label(name, groups),
            **halo_style(name, groups),
        )
    ax.set_title(f"accuracy by topology ({args.method}, 16 peers)")
    ax.set_xlabel("round (0-based)")
    ax.set_ylabel("mean accuracy (fraction correct)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, title="topology")
    fig.savefig(str(out / "accuracy_vs_round.png"), bbox_inches="tight")
    print(f"plot: {out / 'accuracy_vs_round.png'}")


if __name__ == "__main__":
    main()
