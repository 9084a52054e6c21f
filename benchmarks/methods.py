"""Methods on MNIST: accuracy on both bases, mean ± sd over seeds, MB sent, density.

16 peers; ring and small-world; IID and Dirichlet(0.3); every method beside the two
references, ``allreduce`` (exact equal-weight average each round: the gossip methods'
objective) and ``local`` (no communication). Each run reports the mean over peers of the
global accuracy (each peer's model on the shared test set) and of the local accuracy (each
peer on its own test split), and the accuracy of the averaged model (the peers' models
averaged, then evaluated on the global test set). One JSON object per run (also appended to
``--jsonl``, so an interrupted grid resumes), then one table per basis and the plot.

Usage: ``python benchmarks/methods.py --data mnist_5k.csv.gz`` (the 5,000-digit CSV; the
project ships no data). ``--table-only`` rebuilds the tables and plot from ``--jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

METHODS = "allreduce,local,dense,vc,pushsum,pushsum_rs,spafl,fedsparsify,choco"
KEY = ("method", "topology", "partition")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the MNIST CSV (gzip), e.g. mnist_5k.csv.gz")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--topologies", default="ring,smallworld")
    parser.add_argument("--partitions", default="iid,dirichlet:0.3")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--basis", default="global", choices=("global", "local"))
    parser.add_argument("--jsonl", default="benchmarks/methods.jsonl")
    parser.add_argument("--plot", default="benchmarks/methods.png")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not args.table_only and (not args.data or not Path(args.data).is_file()):
        print(f"--data {args.data!r} is not a file; pass the MNIST CSV", file=sys.stderr)
        raise SystemExit(2)
    if not args.table_only:
        _grid(args)
    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line]
    wanted = set(args.methods.split(","))
    rows = [r for r in rows if r["method"] in wanted and r["rounds"] == args.rounds]
    for basis in ("global", "local"):
        print(table(rows, basis, args.methods.split(",")))
        print()
    print(table(rows, "averaged", args.methods.split(",")))
    _plot(rows, args.plot, args.methods.split(","), args.basis)


def _grid(args: argparse.Namespace) -> None:
    import torch

    from spargo.sims import Scenario, run

    torch.set_num_threads(1)
    path = Path(args.jsonl)
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["method"], r["topology"], r["partition"], r["seed"], r["rounds"]))
    for seed in (int(s) for s in args.seeds.split(",")):
        for partition in args.partitions.split(","):
            for topo in args.topologies.split(","):
                for method in args.methods.split(","):
                    if (method, topo, partition, seed, args.rounds) in done:
                        continue
                    scenario = Scenario(
                        nodes=16, topology=topo, method=method, rounds=args.rounds,
                        task=f"mnist:{args.data}", partition=partition, seed=seed,
                        basis=args.basis,
                    )  # fmt: skip
                    s = run(scenario).summary
                    row = {
                        "method": method, "topology": topo, "partition": partition,
                        "seed": seed, "rounds": args.rounds,
                        "global": s["global_accuracy_mean"], "local": s["local_accuracy_mean"],
                        "averaged": s["averaged_model_accuracy"], "density": s["density"],
                        "mb_sent": round(s["bytes_sent_total"] / 1e6, 2),
                        "consensus": s["consensus_distance"], "wall_s": s["wall_s"],
                    }  # fmt: skip
                    print(json.dumps(row), flush=True)
                    with path.open("a") as f:
                        f.write(json.dumps(row) + "\n")


def mean_sd(values: Iterable[float | None]) -> tuple[float, float, int]:
    """(mean, sample sd, n) of the non-missing values (sd 0 for one value, NaN for none)."""
    got = [float(v) for v in values if v is not None]
    if not got:
        return math.nan, math.nan, 0
    mu = sum(got) / len(got)
    var = sum((v - mu) ** 2 for v in got) / (len(got) - 1) if len(got) > 1 else 0.0
    return mu, math.sqrt(var), len(got)


def table(rows: Sequence[dict[str, Any]], basis: str, methods: Sequence[str]) -> str:
    """A markdown table of ``basis`` accuracy (percent, mean ± sd over seeds) per method and
    setting, then MB sent per topology and the final density (means over cells)."""
    settings = sorted({(r["topology"], r["partition"]) for r in rows})
    topologies = sorted({t for t, _ in settings})
    head = " | ".join(
        [f"{t} {p}" for t, p in settings] + [f"MB {t}" for t in topologies] + ["density"]
    )
    lines = [f"{basis} accuracy (%, mean ± sd over seeds; n = seeds)", "", f"| method | {head} |"]
    lines.append("| --- " * (len(settings) + len(topologies) + 2) + "|")
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        cells = []
        for t, p in settings:
            mu, sd, n = mean_sd(r[basis] for r in mine if (r["topology"], r["partition"]) == (t, p))
            cells.append("–" if n == 0 else f"{100 * mu:.1f} ± {100 * sd:.1f} (n={n})")
        for t in topologies:
            mb, _, n = mean_sd(r["mb_sent"] for r in mine if r["topology"] == t)
            cells.append("–" if n == 0 else f"{mb:.0f}")
        density, _, _ = mean_sd(r["density"] for r in mine)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {density:.2f} |")
    return "\n".join(lines)


def _plot(rows: Sequence[dict[str, Any]], path: str, methods: Sequence[str], basis: str) -> None:
    """One panel per (topology, partition): per method, global and local accuracy (mean ±
    sd over seeds) side by side, the averaged model's as a diamond; the legend names the
    declared basis."""
    from matplotlib.figure import Figure

    settings = sorted({(r["topology"], r["partition"]) for r in rows})
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    cols = 2 if len(settings) > 1 else 1
    fig = Figure(figsize=(7 * cols, 3.6 * -(-len(settings) // cols)), dpi=100)
    for index, (topo, part) in enumerate(settings):
        ax = fig.add_subplot(-(-len(settings) // cols), cols, index + 1)
        for offset, (key, colour) in enumerate((("global", "C0"), ("local", "C1"))):
            stats = [
                mean_sd(
                    r[key]
                    for r in rows
                    if (r["method"], r["topology"], r["partition"]) == (m, topo, part)
                )
                for m in present
            ]
            xs = [i + (offset - 0.5) * 0.38 for i in range(len(present))]
            ax.bar(
                xs,
                [100 * s[0] for s in stats],
                width=0.38,
                yerr=[100 * s[1] for s in stats],
                color=colour,
                label=f"{key} test data" + (" (basis)" if key == basis else ""),
                capsize=2,
            )
        averaged = [
            mean_sd(
                r["averaged"]
                for r in rows
                if (r["method"], r["topology"], r["partition"]) == (m, topo, part)
            )[0]
            for m in present
        ]
        ax.plot(
            range(len(present)),
            [100 * a for a in averaged],
            ls="none",
            marker="D",
            color="black",
            markersize=5,
            label="averaged model, global test data",
        )
        ax.set_xticks(range(len(present)), present, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{topo}, {part}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if index == 0:  # one legend under the panels, where it covers no bar
            fig.legend(loc="lower center", ncol=3, fontsize=9, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("16 peers, MNIST-5k: mean over peers, mean ± sd over seeds", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")


if __name__ == "__main__":
    main()
