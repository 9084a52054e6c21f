"""Start-up time and peak memory of the commands a user runs (issue 11).

Each command runs as a child process; its peak resident set size is what the kernel reports
for it (``getrusage(RUSAGE_CHILDREN)``, the figure ``/usr/bin/time -v`` prints), its time is
wall clock, best of ``--repeat``. One JSON object per command:

    .venv/bin/python benchmarks/footprint.py [--repeat 3]

The reference job is the issue's: ``spargo sim --nodes 8 --topology ring --rounds 10
--partition iid`` with its plots written. ``import torch`` alone is listed as the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPARGO = str(Path(sys.executable).with_name("spargo"))
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import torch": [sys.executable, "-c", "import torch"],
    "spargo --version": [SPARGO, "--version"],
    "spargo sim --help": [SPARGO, "sim", "--help"],
    "spargo node --help": [SPARGO, "node", "--help"],
    "spargo sim 8-peer ring, 10 rounds, plots": [
        SPARGO, "sim", "--nodes", "8", "--topology", "ring", "--rounds", "10",
        "--partition", "iid", "--quiet",
    ],
    "spargo sim 8-peer ring, 10 rounds, no plots": [
        SPARGO, "sim", "--nodes", "8", "--topology", "ring", "--rounds", "10",
        "--partition", "iid", "--quiet", "--no-plots",
    ],
}  # fmt: skip


def measure(argv: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process; ``--out`` added for ``sim``."""
    if "sim" in argv and "--help" not in argv:
        argv = [*argv, "--out", str(out)]
    code = (
        "import os, resource, subprocess, sys, json, time\n"
        "t = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps([wall, peak]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, check=True
    )
    wall, peak = json.loads(done.stdout)
    return float(wall), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (best is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in COMMANDS.items():
            runs = [measure(argv, Path(tmp) / f"run{i}") for i in range(args.repeat)]
            print(
                json.dumps(
                    {
                        "command": name,
                        "wall_s_best": round(min(w for w, _ in runs), 3),
                        "peak_rss_mb": round(max(p for _, p in runs), 1),
                        "repeat": args.repeat,
                        "python": sys.version.split()[0],
                        "at": time.strftime("%Y-%m-%d"),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
