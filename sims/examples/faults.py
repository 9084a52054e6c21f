"""Fault study: the same swarm under message loss, churn and a healing partition.

    python sims/examples/faults.py --out runs/faults

Prints a table and saves consensus_vs_round.png (the partition's split and heal show up as a
rise and a fall of the consensus distance). Progress (cases and rounds done, ETA) on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spargo.node.progress import Progress
from spargo.sims import Scenario, SimResult, run

CASES: dict[str, dict[str, Any]] = {
    "clean": {},
    "loss 30%": {"loss": 0.3},
    "churn 5%": {"churn": 0.05, "churn_downtime": 3},
    "partition 6:12": {"partition_at": (6, 12)},
    "slow links": {"latency_ms": 80, "jitter_ms": 40, "bandwidth_mbps": 2},
}


def run_cases(method: str, rounds: int) -> dict[str, SimResult]:
    """Every case, with one progress bar over all their rounds."""
    results = {}
    with Progress(len(CASES) * rounds, label="fault cases", unit="rounds") as bar:
        for index, (name, extra) in enumerate(CASES.items()):
            scenario = Scenario(nodes=16, method=method, method_options={}, rounds=rounds, **extra)

            def row(r: dict[str, Any], base: int = index * rounds, case: str = name) -> None:
                acc = r["accuracy_mean"]
                shown = "n/a" if acc is None else f"{acc:.3f}"
                mb = r["bytes_sent_total"] / 1e6
                bar.update(base + r["round"] + 1, f"{case}: accuracy {shown}, {mb:.1f} MB")

            results[name] = run(scenario, on_row=row)
            bar.note(f"{name}: done ({bar.eta_text()})")
    return results


def main() -> None:
    """Run each fault case and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="vc")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default="runs/faults")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_cases(args.method, args.rounds)
    print(f"{'case':<16} {'accuracy':>9} {'dropped':>8} {'simulated s':>12} {'wall s':>7}")
    for name, result in results.items():
        s = result.summary
        print(
            f"{name:<16} {s['accuracy_mean']:>9.3f} {s['messages_dropped']:>8} "
            f"{s['simulated_s']:>12.1f} {s['wall_s']:>7.1f}"
        )
    from matplotlib.figure import Figure

    from spargo.sims.plotting import LINE_STYLES, MARKERS, halo_label, halo_style, overlap_groups

    curves = {
        name: [
            (r["round"], r["consensus_distance"])
            for r in result.round_stats
            if r["consensus_distance"] is not None
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
    ax.set_yscale("log")
    ax.set_title(f"consensus distance under faults ({args.method}, 16 peers)")
    ax.set_xlabel("round (0-based)")
    ax.set_ylabel("consensus distance\nmean ‖x_i − x̄‖² (squared L2, log scale)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, title="case")
    fig.savefig(str(out / "consensus_vs_round.png"), bbox_inches="tight")
    print(f"plot: {out / 'consensus_vs_round.png'}")


if __name__ == "__main__":
    main()
