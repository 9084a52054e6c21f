"""How the simulator scales: wall seconds per round and memory per peer, per engine and size.

Synthetic task (max(2000, 4·peers) samples, so every peer gets a few), small MLP, dense gossip
on a small-world graph, 2 local steps. ``--engine node`` runs a real ``Node`` per peer (sizes up
to a few thousand); ``--engine batched`` runs the batched engine (tens of thousands), with
``--eval-peers K`` evaluating a seeded sample of K peers per round (all in the last round).
Each size runs in its own process (so peak RSS is that size's), printing one JSON object per
line; ``steady_s_per_round`` is from the end of the first round to the end of the last. The
batched engine also reports its train, gossip and evaluation seconds per round; ``--device
cuda`` runs it on a GPU (the row says ``device`` and the GPU's peak memory, ``peak_gpu_mb``).

``--jsonl FILE`` appends each size's object to FILE; ``--plot PNG`` then draws steady seconds
per round against peers (log-log), one line per engine and evaluation setting, from FILE:

    python benchmarks/sim_scale.py --engine node --sizes 16,64,256,1024,4096 --jsonl s.jsonl
    python benchmarks/sim_scale.py --engine batched --eval-peers 64 --sizes 1024,4096 \
        --jsonl s.jsonl
    python benchmarks/sim_scale.py --jsonl s.jsonl --plot benchmarks/sim_scale.png --sizes ''
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any


def measure(
    nodes: int,
    rounds: int,
    engine: str,
    eval_peers: int,
    loss: float = 0.0,
    device: str = "cpu",
    eval_every: int = 1,
) -> dict[str, Any]:
    """Run one size in this process and measure it."""
    import torch

    from spargo.sims import Scenario, run

    torch.set_num_threads(1)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scenario = Scenario(
        nodes=nodes, topology="smallworld", method="dense", method_options={}, rounds=rounds,
        local_steps=2, task=f"synthetic:{max(2000, 4 * nodes)}", partition="iid",
        consensus=False, engine=engine, eval_peers=eval_peers, loss=loss, device=device,
        eval_every=eval_every,
    )  # fmt: skip
    started = time.perf_counter()
    finished: list[float] = []
    result = run(scenario, on_round=lambda _r, _m: finished.append(time.perf_counter()))
    wall_s = time.perf_counter() - started
    steady_s = (finished[-1] - finished[0]) / max(1, len(finished) - 1)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {
        "engine": engine,
        "device": device,
        "nodes": nodes,
        "rounds": rounds,
        "eval_peers": eval_peers or "all",
        "eval_every": eval_every,
        "loss": loss,
        "wall_s": round(wall_s, 2),
        "wall_s_per_round": round(wall_s / rounds, 3),
        "steady_s_per_round": round(steady_s, 3),
        "setup_s": round(finished[0] - started - steady_s, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "rss_per_peer_mb": round((peak_kb - base_kb) / 1024 / nodes, 4),
        "messages_sent": result.summary["messages_sent"],
        "accuracy_mean": result.summary["accuracy_mean"],
    }
    for part in ("train", "gossip", "eval"):
        key = f"wall_{part}_s"
        if key in result.summary:
            out[f"{part}_s_per_round"] = round(result.summary[key] / rounds, 3)
    if device != "cpu":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256,1024")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", choices=("node", "batched"), default="node")
    parser.add_argument(
        "--eval-peers", type=int, default=0, help="batched: peers evaluated per round (0 = all)"
    )
    parser.add_argument("--loss", type=float, default=0.0, help="message loss probability")
    parser.add_argument("--device", default="cpu", help="batched: cpu, cuda or cuda:N")
    parser.add_argument(
        "--eval-every", type=int, default=1, help="evaluate every K rounds and the last one"
    )
    parser.add_argument("--jsonl", default="", help="append each size's JSON object here")
    parser.add_argument("--plot", default="", help="draw s/round vs peers from --jsonl (PNG)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        from spargo.sims.scenario import ScenarioError

        try:
            row = measure(
                args.one, args.rounds, args.engine, args.eval_peers, args.loss, args.device,
                args.eval_every,
            )  # fmt: skip
        except ScenarioError as exc:
            parser.error(str(exc))
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
        return
    for size in (int(s) for s in args.sizes.split(",") if s):
        cmd = [sys.executable, __file__, "--one", str(size), "--rounds", str(args.rounds)]
        cmd += ["--engine", args.engine, "--eval-peers", str(args.eval_peers)]
        cmd += ["--loss", str(args.loss), "--device", args.device]
        cmd += ["--eval-every", str(args.eval_every)]
        done = subprocess.run([*cmd, "--jsonl", args.jsonl] if args.jsonl else cmd)
        if done.returncode:
            sys.exit(done.returncode)
    if args.plot:
        if not args.jsonl:
            parser.error("--plot needs --jsonl FILE (the runs to draw)")
        plot(args.jsonl, args.plot)
        print(f"plot: {args.plot}")


def plot(jsonl: str, path: str) -> None:
    """Steady s/round against peers, log-log, one line per (engine, evaluated peers); the
    fastest of repeated measurements of a size (the machine's load only slows runs down)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best: dict[tuple[str, str, int], dict[int, float]] = {}
    with open(jsonl) as f:
        for line in filter(None, (raw.strip() for raw in f)):
            row = json.loads(line)
            device = row.get("device", "cpu")
            engine = row["engine"] if device == "cpu" else f"{row['engine']} ({device})"
            key = (engine, str(row["eval_peers"]), int(row.get("eval_every", 1)))
            sizes = best.setdefault(key, {})
            n, s = int(row["nodes"]), float(row["steady_s_per_round"])
            sizes[n] = min(s, sizes.get(n, s))
    fig, ax = plt.subplots(figsize=(10, 4.6))
    for (engine, evaluated, every), sizes in sorted(best.items()):
        xs = sorted(sizes)
        if every != 1:
            label = f"{engine}: all peers evaluated in the first and last rounds only"
        elif evaluated == "all":
            label = f"{engine}: all peers evaluated every round"
        else:
            label = f"{engine}: {evaluated} sampled peers evaluated each round"
        style = "o-" if engine == "node" else "s--" if evaluated == "all" else "^-"
        style = style if every == 1 else style[0] + "-."
        style = style if "(" not in engine else style[0] + ":"  # a GPU: dotted
        ax.plot(xs, [sizes[x] for x in xs], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("peers")
    ax.set_ylabel("steady seconds per round (train + gossip + eval)")
    ax.set_title("Simulator scale: dense gossip, small world, 2 cores, 1 torch thread")
    ax.grid(True, which="both", alpha=0.3)
    ax.axhline(2.0, color="black", linewidth=0.8, alpha=0.5, label="2 s per round")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
