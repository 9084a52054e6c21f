"""Fault study: the same swarm under message loss, churn and a healing partition.

    python sims/examples/faults.py --out runs/faults

Prints a table and saves consensus_vs_round.png (the partition's split and heal show up as a
rise and a fall of the consensus distance).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spargo.sims import Scenario, run

CASES: dict[str, dict[str, Any]] = {
    "clean": {},
    "loss 30%": {"loss": 0.3},
    "churn 5%": {"churn": 0.05, "churn_downtime": 3},
    "partition 6:12": {"partition_at": (6, 12)},
    "slow links": {"latency_ms": 80, "jitter_ms": 40, "bandwidth_mbps": 2},
}


def main() -> None:
    """Run each fault case and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="vc")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default="runs/faults")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        name: run(
            Scenario(nodes=16, method=args.method, method_options={}, rounds=args.rounds, **extra)
        )
        for name, extra in CASES.items()
    }
    print(f"{'case':<16} {'accuracy':>9} {'dropped':>8} {'simulated s':>12} {'wall s':>7}")
    for name, result in results.items():
        s = result.summary
        print(
            f"{name:<16} {s['accuracy_mean']:>9.3f} {s['messages_dropped']:>8} "
            f"{s['simulated_s']:>12.1f} {s['wall_s']:>7.1f}"
        )
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, result in results.items():
        rows = [r for r in result.round_stats if r["consensus_distance"] is not None]
        ax.plot([r["round"] + 1 for r in rows], [r["consensus_distance"] for r in rows], label=name)
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("consensus distance")
    ax.legend()
    FigureCanvasAgg(fig).print_png(str(out / "consensus_vs_round.png"))  # type: ignore[no-untyped-call]
    print(f"plot: {out / 'consensus_vs_round.png'}")


if __name__ == "__main__":
    main()
