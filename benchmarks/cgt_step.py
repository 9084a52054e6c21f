"""Why ``cgt`` clamps its consensus step: accuracy and consensus beyond the clamp.

``cgt`` and ``cgt_masked`` use the consensus step min(γ, ratio) (docs/algorithms.md §10.2),
the bound that keeps compressed gossip stable for every option the CLI accepts. This
experiment lifts the clamp (the step used is γ itself, which the CLI cannot do) to measure
what a larger step would buy on issue 14's hardest setting and where it breaks: MNIST-5k, 16
peers, Dirichlet(0.3), 60 rounds, top-k compression in int8. One JSON object per run, then a
table (global accuracy mean ± sd over seeds, MB, final consensus distance).

    nice -n 10 python benchmarks/cgt_step.py --data ../shared/data/mnist_5k.csv.gz
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: (method, ratio, γ, topology, seeds) cells; cgt_masked's ratio is of the kept entries.
CELLS: list[tuple[str, float, float, str, tuple[int, ...]]] = [
    ("cgt", 0.1, 0.3, "ring", (0,)),
    ("cgt", 0.1, 0.6, "ring", (0,)),
    ("cgt", 0.1, 0.8, "ring", (0,)),
    ("cgt_masked", 0.19, 0.4, "ring", (0,)),
    ("cgt_masked", 0.19, 0.6, "ring", (0, 1, 2)),
    ("cgt_masked", 0.19, 0.8, "ring", (0, 1, 2)),
    ("cgt_masked", 0.19, 1.0, "ring", (0,)),
    ("cgt_masked", 0.19, 0.6, "smallworld", (0,)),
    ("cgt_masked", 0.19, 0.8, "smallworld", (0,)),
]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/mnist_5k.csv.gz", help="MNIST-5k csv.gz")
    p.add_argument("--load", default="", help="read runs (JSON lines) instead of running")
    args = p.parse_args(argv)
    if args.load:
        if not Path(args.load).is_file():
            p.error(f"--load {args.load!r} is not a file")
        lines = Path(args.load).read_text().splitlines()
        runs = [json.loads(line) for line in lines if line.startswith("{")]
    else:
        if not Path(args.data).is_file():
            p.error(f"--data {args.data!r} is not a file (MNIST-5k csv.gz)")
        runs = [
            _run(args.data, method, ratio, gamma, topo, seed)
            for method, ratio, gamma, topo, seeds in CELLS
            for seed in seeds
        ]
    print(table(runs))


def _run(
    data: str, method: str, ratio: float, gamma: float, topo: str, seed: int
) -> dict[str, Any]:
    import torch

    import spargo.node.methods.cgt as cgt
    from spargo.sims import Scenario, run

    torch.set_num_threads(1)

    def unclamped(gamma: float, ratio: float, compressor: str = "topk") -> float:
        return gamma  # the experiment: no clamp

    cgt.consensus_step = unclamped
    options = {"compressor": "topk", "ratio": ratio, "value_dtype": "int8", "gamma": gamma}
    scenario = Scenario(
        nodes=16, topology=topo, method=method, rounds=60, task=f"mnist:{data}",
        partition="dirichlet:0.3", seed=seed, method_options=options,
    )  # fmt: skip
    result = run(scenario)
    row = {
        "method": method, "ratio": ratio, "gamma": gamma, "topology": topo, "seed": seed,
        "global_accuracy_mean": result.summary["global_accuracy_mean"],
        "bytes_sent_total": result.summary["bytes_sent_total"],
        "consensus_distance": result.round_stats[-1]["consensus_distance"],
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def table(runs: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per (method, ratio, γ, topology), seeds pooled."""
    lines = [
        "| method | ratio | γ (unclamped) | topology | global acc. | seeds | MB | consensus |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    cells = dict.fromkeys((r["method"], r["ratio"], r["gamma"], r["topology"]) for r in runs)
    for method, ratio, gamma, topo in cells:
        rows = [
            r
            for r in runs
            if (r["method"], r["ratio"], r["gamma"], r["topology"]) == (method, ratio, gamma, topo)
        ]
        acc = [r["global_accuracy_mean"] for r in rows]
        mean = sum(acc) / len(acc)
        sd = math.sqrt(sum((a - mean) ** 2 for a in acc) / (len(acc) - 1)) if len(acc) > 1 else 0
        mb = sum(r["bytes_sent_total"] for r in rows) / len(rows) / 1e6
        cd = sum(r["consensus_distance"] for r in rows) / len(rows)
        lines.append(
            f"| {method} | {ratio} | {gamma} | {topo} | "
            + (f"{mean:.3f} ± {sd:.3f}" if len(acc) > 1 else f"{mean:.3f}")
            + " | "
            f"{','.join(str(r['seed']) for r in rows)} | {mb:.1f} | {cd:.3g} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
