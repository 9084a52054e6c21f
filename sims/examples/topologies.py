"""Topology comparison: ring vs small-world vs exponential vs complete, same method and data.

    python sims/examples/topologies.py --out runs/topologies

Prints a table (final accuracy, consensus distance, MB sent) and saves accuracy_vs_round.png.
Progress (topologies and rounds done, ETA) on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spargo.sims import Scenario
from spargo.sims.compare import compare, plot_curves, round_curves

TOPOLOGIES = ("ring", "smallworld", "exponential", "complete")


def main() -> None:
    """Run the four topologies and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="vc")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default="runs/topologies")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scenarios = {
        name: Scenario(
            nodes=16, topology=name, method=args.method, method_options={}, rounds=args.rounds
        )
        for name in TOPOLOGIES
    }
    results = compare(scenarios, label="topologies")
    print(f"{'topology':<12} {'accuracy':>9} {'consensus':>10} {'MB sent':>9}")
    for name, result in results.items():
        s = result.summary
        print(
            f"{name:<12} {s['accuracy_mean']:>9.3f} {s['consensus_distance']:>10.4g} "
            f"{s['bytes_sent_total'] / 1e6:>9.2f}"
        )
    path = plot_curves(
        round_curves(results, "accuracy_mean"),
        out / "accuracy_vs_round.png",
        title=f"accuracy by topology ({args.method}, 16 peers)",
        ylabel="mean accuracy (fraction correct)",
        legend_title="topology",
    )
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
