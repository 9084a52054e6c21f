"""The wheel as a user installs it (issue 11): one ``spargo`` namespace, a lean core, extras.

One fresh virtual environment per session, outside the checkout:

1. the wheel's files all live under ``spargo/`` and its ``top_level.txt`` is exactly ``spargo``;
2. with the core dependencies only (no matplotlib, scikit-learn, rich), ``spargo --version``,
   ``spargo node --help`` and two real peers over TCP on 127.0.0.1 work, and ``spargo sim`` is
   one line naming the extra to install;
3. with the ``sim`` extra and the unrelated package ``sparse`` from the package index (its
   import name was ours before the rename), ``spargo sim --nodes 4 --rounds 2`` runs from a
   directory outside the checkout, a shipped scenario runs by name, and the other library's
   ``sparse`` still imports.

Slow (it installs torch into the new environment from pip's cache or the local wheel), so it
runs once per session; it needs the package index for ``sparse`` and the extras.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The torch the project's own venv pins (the CPU build on our machines; see the Makefile).
TORCH = os.environ.get("SPARGO_TEST_TORCH", "torch==2.13.0")
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "runs", "*.egg-info", "__pycache__", ".*_cache"
)


@dataclass
class Installed:
    wheel: Path
    venv: Path
    work: Path  # a directory outside the checkout

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["OMP_NUM_THREADS"] = "1"
        return subprocess.run(
            argv, cwd=self.work, env=env, capture_output=True, text=True, timeout=timeout
        )

    def pip(self, *args: str) -> None:
        done = self.run(self.bin("python"), "-m", "pip", "install", "--quiet", *args, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("packaging")
    dist = base / "dist"
    # Build from a copy: an in-tree build leaves build/ and *.egg-info in the checkout.
    source = base / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("spargo-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    work = base / "elsewhere"
    work.mkdir()
    env = Installed(wheel, venv, work)
    env.pip("--disable-pip-version-check", TORCH)
    env.pip("--disable-pip-version-check", str(wheel))
    return env


def test_the_wheel_installs_one_top_level_package(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert wheel.read(top_level).decode().split() == ["spargo"]
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"spargo"}
    for package in ("node", "protocol", "sparse", "sims", "topology"):
        assert f"spargo/{package}/__init__.py" in names
    assert "spargo/sims/scenarios/default.toml" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_core_install_runs_a_peer_without_the_extras(installed: Installed) -> None:
    listed = installed.run(installed.bin("python"), "-m", "pip", "list", "--format=json")
    present = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not present & {"matplotlib", "scikit-learn", "rich", "scipy"}, present
    version = installed.run(installed.bin("spargo"), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("spargo ")
    as_module = installed.run(installed.bin("python"), "-m", "spargo", "--version")
    assert as_module.stdout == version.stdout
    helped = installed.run(installed.bin("spargo"), "node", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--config" in helped.stdout
    overview = installed.run(installed.bin("spargo"))
    assert overview.returncode == 0
    assert "COMMAND" in overview.stdout
    sim = installed.run(installed.bin("spargo"), "sim", "--nodes", "4", "--rounds", "2")
    assert sim.returncode == 2
    assert sim.stderr.count("\n") == 1, sim.stderr
    assert "pip install 'spargo[sim]'" in sim.stderr


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _peer_config(work: Path, me: int, ports: list[int]) -> Path:
    book = "\n".join(f'p{i} = "127.0.0.1:{port}"' for i, port in enumerate(ports))
    path = work / f"p{me}.toml"
    path.write_text(
        f'[node]\npeer_id = "p{me}"\nswarm = "pkg"\nmethod = "dense"\nrounds = 2\n'
        f"round_deadline_s = 20.0\n"
        f'[transport]\nkind = "tcp"\nhost = "127.0.0.1"\nport = {ports[me]}\n'
        f"[transport.peers]\n{book}\n"
        f'[topology]\ngraph = "complete"\npeers = ["p0", "p1"]\n'
        f'[task]\nname = "synthetic"\n'
        f'[metrics]\npath = "{work / f"p{me}.jsonl"}"\n'
    )
    return path


def test_two_core_peers_gossip_over_tcp(installed: Installed) -> None:
    ports = _free_ports(2)
    configs = [_peer_config(installed.work, i, ports) for i in range(2)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    procs = [
        subprocess.Popen(
            [installed.bin("spargo"), "node", "--config", str(c), "--json"],
            cwd=installed.work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in configs
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["messages_received"] > 0, summary  # it heard its neighbour
    # Each peer merged its neighbour's model in at least one of its rounds.
    for i in range(2):
        lines = (installed.work / f"p{i}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        assert max(r["merge"].get("merged_peers", 0) for r in records) >= 1, records


def test_sim_extra_beside_the_unrelated_sparse_package(installed: Installed) -> None:
    installed.pip("--disable-pip-version-check", f"{installed.wheel}[sim]", "sparse")
    sim = installed.run(
        installed.bin("spargo"), "sim", "--nodes", "4", "--rounds", "2", "--no-plots", "--json"
    )
    assert sim.returncode == 0, sim.stderr[-2000:]
    summary = json.loads(sim.stdout.strip().splitlines()[-1])
    assert summary["nodes"] == 4
    assert summary["rounds"] == 2
    shipped = installed.run(
        installed.bin("spargo"), "sim", "--scenario", "default", "--rounds", "1", "--no-plots"
    )
    assert shipped.returncode == 0, shipped.stderr[-2000:]
    other = installed.run(
        installed.bin("python"), "-c", "import sparse, numpy; print(type(sparse.COO(numpy.eye(2))))"
    )
    assert other.returncode == 0, other.stderr[-2000:]
    assert "COO" in other.stdout
