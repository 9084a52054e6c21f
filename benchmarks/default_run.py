"""The default job's candidates: which sparse, masked, variance-corrected setting to ship.

``spargo sim`` with no flags must show what spargo is for — a sparse model, compressed masked
gossip, variance-corrected merging — with the best such setting measured. This script runs
the default scenario (``sims/scenarios/default.toml``: 16 peers, small-world, digits,
Dirichlet(0.5), 30 rounds) with each candidate's method options, beside the references
(``allreduce``: exact equal-weight average, the ceiling; ``local``: no communication, the
floor; ``dense``: D-PSGD), over ``--seeds`` seeds. One JSON object per run, then a table:
global accuracy (the declared basis) and local accuracy, mean ± sd over seeds, MB sent by all
peers, and the final density.

    nice -n 10 python benchmarks/default_run.py --seeds 0,1,2 > default_run.jsonl
    python benchmarks/default_run.py --load default_run.jsonl     # the table only
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: name -> (method, method options). The first is the shipped default: the most accurate
#: (global basis) of the variance-corrected settings with a sparse model (final density at
#: most 0.5) that send at most a third of D-PSGD's bytes.
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "spafl weights_every=2": ("spafl", {"weights_every": 2}),
    "spafl weights_every=3": ("spafl", {"weights_every": 3}),
    "spafl weights_every=1": ("spafl", {"weights_every": 1}),
    "spafl weights_every=3 vc=false": ("spafl", {"weights_every": 3, "vc": False}),
    "spafl weights_every=3 alpha=0.003": ("spafl", {"weights_every": 3, "alpha": 0.003}),
    "spafl weights_every=1 alpha=0.03": ("spafl", {"weights_every": 1, "alpha": 0.03}),
    "spafl weights_every=2 alpha=0.03": ("spafl", {"weights_every": 2, "alpha": 0.03}),
    "fedsparsify": ("fedsparsify", {}),
    "cgt_masked": ("cgt_masked", {}),
    "dense": ("dense", {}),
    "allreduce": ("allreduce", {}),
    "local": ("local", {}),
}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="names, comma-separated")
    p.add_argument("--load", default="", help="read runs (JSON lines) instead of running")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        p.error(f"--candidates: unknown {', '.join(unknown)}; use some of {', '.join(CANDIDATES)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1,2")
    if args.load:
        if not Path(args.load).is_file():
            p.error(f"--load {args.load!r} is not a file")
        lines = Path(args.load).read_text().splitlines()
        runs = [json.loads(line) for line in lines if line.startswith("{")]
    else:
        runs = [_run(name, seed) for seed in seeds for name in names]
    print(table(runs, names))


def _run(name: str, seed: int) -> dict[str, Any]:
    import torch

    from spargo.node.config import load_toml
    from spargo.sims import run
    from spargo.sims.scenario import scenario_from_mapping
    from spargo.sims.shipped import shipped_scenario

    torch.set_num_threads(1)
    method, options = CANDIDATES[name]
    fields = {**load_toml(shipped_scenario("default")), "method": method, "seed": seed}
    scenario = scenario_from_mapping({**fields, "method_options": options}, "default")
    s = run(scenario).summary
    row = {
        "candidate": name, "method": method, "options": options, "seed": seed,
        "global_accuracy_mean": s["global_accuracy_mean"],
        "local_accuracy_mean": s.get("local_accuracy_mean"),
        "bytes_sent_total": s["bytes_sent_total"], "density": s["density"],
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "—"
    mean = sum(values) / len(values)
    sd = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1
        else 0.0
    )
    return f"{mean:.3f} ± {sd:.3f}"


def table(runs: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """Markdown: one row per candidate, in ``names`` order."""
    lines = [
        "| candidate | global acc. | local acc. | MB sent | density | seeds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        rows = [r for r in runs if r["candidate"] == name]
        if not rows:
            continue
        mb = sum(r["bytes_sent_total"] for r in rows) / len(rows) / 1e6
        density = sum(r["density"] for r in rows) / len(rows)
        glob = _mean_sd([r["global_accuracy_mean"] for r in rows])
        local = _mean_sd([r["local_accuracy_mean"] for r in rows if r["local_accuracy_mean"]])
        lines.append(f"| {name} | {glob} | {local} | {mb:.1f} | {density:.2f} | {len(rows)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
