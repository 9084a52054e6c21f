"""Fault study: the same swarm under message loss, churn and a healing partition.

    python sims/examples/faults.py --out runs/faults

Prints a table and saves consensus_vs_round.png (the partition's split and heal show up as a
rise and a fall of the consensus distance). Progress (cases and rounds done, ETA) on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spargo.sims import Scenario
from spargo.sims.compare import compare, plot_curves, round_curves

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
    scenarios = {
        name: Scenario(nodes=16, method=args.method, method_options={}, rounds=args.rounds, **extra)
        for name, extra in CASES.items()
    }
    results = compare(scenarios, label="fault cases")
    print(f"{'case':<16} {'accuracy':>9} {'dropped':>8} {'simulated s':>12} {'wall s':>7}")
    for name, result in results.items():
        s = result.summary
        print(
            f"{name:<16} {s['accuracy_mean']:>9.3f} {s['messages_dropped']:>8} "
            f"{s['simulated_s']:>12.1f} {s['wall_s']:>7.1f}"
        )
    path = plot_curves(
        round_curves(results, "consensus_distance"),
        out / "consensus_vs_round.png",
        title=f"consensus distance under faults ({args.method}, 16 peers)",
        ylabel="consensus distance\nmean ‖x_i − x̄‖² (squared L2, log scale)",
        legend_title="case",
        log_y=True,
    )
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
