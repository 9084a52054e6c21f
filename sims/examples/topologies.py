"""Topology comparison: ring vs small-world vs exponential vs complete, same method and data.

    python sims/examples/topologies.py --out runs/topologies

Prints a table (final accuracy, consensus distance, MB sent) and saves accuracy_vs_round.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spargo.sims import Scenario, run


def main() -> None:
    """Run the four topologies and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="vc")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default="runs/topologies")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in ("ring", "smallworld", "exponential", "complete"):
        scenario = Scenario(
            nodes=16, topology=name, method=args.method, method_options={}, rounds=args.rounds
        )
        results[name] = run(scenario)
    print(f"{'topology':<12} {'accuracy':>9} {'consensus':>10} {'MB sent':>9}")
    for name, result in results.items():
        s = result.summary
        print(
            f"{name:<12} {s['accuracy_mean']:>9.3f} {s['consensus_distance']:>10.4g} "
            f"{s['bytes_sent_total'] / 1e6:>9.2f}"
        )
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, result in results.items():
        rows = result.round_stats
        ax.plot([r["round"] + 1 for r in rows], [r["accuracy_mean"] for r in rows], label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("mean accuracy")
    ax.legend()
    FigureCanvasAgg(fig).print_png(str(out / "accuracy_vs_round.png"))  # type: ignore[no-untyped-call]
    print(f"plot: {out / 'accuracy_vs_round.png'}")


if __name__ == "__main__":
    main()
