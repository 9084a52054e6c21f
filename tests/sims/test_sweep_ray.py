"""``spargo sim --sweep FILE --ray [ADDRESS]``: the same table as the process pool, failed and
dying cells reported while the others land, one-line errors for bad addresses and no Ray.

One local Ray instance (two CPUs, no dashboard) serves the tests that run cells: it is started
through ``sweep_ray.ray_session`` as the command starts one, and their sweeps reuse it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from spargo.cli import main, missing_extra
from spargo.sims import sweep_ray
from tests.sims.conftest import assert_one_line_error

GRID = (
    '[base]\nnodes = 4\nrounds = 2\nlocal_steps = 2\ntask = "synthetic"\npartition = "iid"\n'
    '[grid]\nmethod = ["dense", "vc"]\nseed = [0, 1]\n'
)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    with sweep_ray.ray_session("", 2):
        yield


def _sweep(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def _without(key: str, row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


def _cell_lines(err: str) -> list[str]:
    """The progress lines, without the ETA and in name order (cells end in any order)."""
    lines = [re.sub(r" \(ETA [^)]*\)$", "", x) for x in err.splitlines() if x.startswith("sweep ")]
    return sorted(x.split(" ", 2)[2] for x in lines)


@pytest.mark.usefixtures("local_ray")
def test_ray_and_the_process_pool_give_the_same_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = _sweep(tmp_path)
    pool, ray = tmp_path / "pool", tmp_path / "ray"
    assert main(["sim", "--sweep", str(sweep), "--out", str(pool), "--workers", "2"]) == 0
    pool_err = capsys.readouterr().err
    assert main(["sim", "--sweep", str(sweep), "--out", str(ray), "--ray"]) == 0
    ray_err = capsys.readouterr().err
    pool_rows = json.loads((pool / "sweep.json").read_text())
    ray_rows = json.loads((ray / "sweep.json").read_text())
    assert len(ray_rows) == 4
    assert [_without("wall_s", r) for r in ray_rows] == [_without("wall_s", r) for r in pool_rows]
    assert all(r["accuracy_mean"] is not None and not r["error"] for r in ray_rows)
    header = (ray / "sweep.csv").read_text().splitlines()[0]
    assert header == (pool / "sweep.csv").read_text().splitlines()[0]
    assert "sweep 4/4" in ray_err
    assert _cell_lines(ray_err) == _cell_lines(pool_err)
    # Each cell's reports came back from its worker into the sweep folder, as the pool's.
    for row in ray_rows:
        ours = json.loads((ray / row["name"] / "summary.json").read_text())
        theirs = json.loads((pool / row["name"] / "summary.json").read_text())
        assert _without("wall_s", ours["summary"]) == _without("wall_s", theirs["summary"])
        names = sorted(p.name for p in (ray / row["name"]).iterdir())
        assert names == sorted(p.name for p in (pool / row["name"]).iterdir())
    assert (ray / "sweep.png").exists()
    assert (ray / "sweep.md").read_text().count("\n") == 2 + 4


@pytest.mark.usefixtures("local_ray")
def test_a_failing_cell_is_reported_and_the_others_land(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the broken task is a module in the working directory
    (tmp_path / "broken_task.py").write_text(
        "def make(seed):\n    raise RuntimeError('this task is broken on purpose')\n"
    )
    sweep = _sweep(
        tmp_path,
        '[base]\nnodes = 4\nrounds = 2\nlocal_steps = 2\npartition = "iid"\nmethod = "dense"\n'
        '[grid]\ntask = ["synthetic", "broken_task:make"]\ntopology = ["ring"]\n',
    )
    out = tmp_path / "out"
    assert main(["sim", "--sweep", str(sweep), "--out", str(out), "--ray"]) == 1
    captured = capsys.readouterr()
    assert "FAILED: RuntimeError: this task is broken on purpose" in captured.err
    assert "FAILED dense-ring-s0-task_broken_task_make-clean: RuntimeError" in captured.out
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["error"] for r in rows] == ["", "RuntimeError: this task is broken on purpose"]
    assert rows[0]["accuracy_mean"] is not None
    done = out / rows[0]["name"] / "summary.json"
    stamp = done.stat().st_mtime_ns
    # --resume on Ray runs only the cell without a summary (which fails again).
    argv = ["sim", "--sweep", str(sweep), "--out", str(out), "--ray", "--resume", "--json"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert done.stat().st_mtime_ns == stamp
    assert json.loads(captured.out)["failed"] == 1
    assert "sweep 2/2 dense-ring-s0-task_broken_task_make-clean: FAILED" in captured.err


@pytest.mark.usefixtures("local_ray")
def test_tasks_stream_back_with_their_errors_and_a_dead_worker_is_one_failed_cell() -> None:
    # Plain functions stand in for the cell runner. Results stream back as tasks end: the
    # short one first, while the long one still runs on the instance's other CPU.
    finished = sweep_ray.ray_cells({0: (3.0,), 1: (0.0,)}, time.sleep)
    assert next(finished) == (1, None)
    assert next(finished) == (0, None)
    # int raises on "x"; the others land; at most one in flight.
    assert sorted(sweep_ray.ray_cells({0: ("12",), 1: ("x",), 2: ("3",)}, int, 1)) == [
        (0, 12),
        (1, "ValueError: invalid literal for int() with base 10: 'x'"),
        (2, 3),
    ]
    # Workers run one torch thread each (the tasks are the parallelism).
    assert list(sweep_ray.ray_cells({0: ()}, torch.get_num_threads)) == [(0, 1)]
    # os._exit kills the worker: one failed cell, its reason one line.
    [(index, reason)] = list(sweep_ray.ray_cells({7: (3,)}, os._exit))
    assert index == 7
    assert reason.startswith("WorkerCrashedError: ")
    assert "\n" not in reason


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("two words", "'two words' is not a Ray address"),
        ("ray://head", "'ray://head' is not a Ray address"),
        ("http://head:10001", "give nothing (a local Ray instance), 'auto', HOST:PORT or"),
        ("head:0", "the port must be in 1..65535"),
        ("head:70000", "the port must be in 1..65535"),
    ],
)
def test_a_malformed_address_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str, needle: str
) -> None:
    out = tmp_path / "out"
    argv = ["--sweep", str(_sweep(tmp_path)), "--out", str(out), "--ray", address]
    assert_one_line_error(argv, needle, lambda: capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("scheme", ["ray://", ""])
def test_an_unreachable_cluster_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scheme: str
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    address = f"{scheme}127.0.0.1:{port}"
    argv = ["--sweep", str(_sweep(tmp_path)), "--out", str(out), "--ray", address]
    assert_one_line_error(
        argv, f"--ray '{address}': no Ray cluster answers there", lambda: capsys.readouterr().err
    )
    assert not out.exists()


@pytest.mark.parametrize("reply", [b"HTTP/1.0 400 Bad Request\r\n\r\n", b""])
def test_a_listener_that_is_not_ray_is_one_line_in_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reply: bytes
) -> None:
    """A web server (it answers HTTP/1) or a silent one at the address: Ray would retry for
    minutes; the gRPC probe says so in one line, within the probe's timeout."""
    import threading
    import time

    from spargo.sims import sweep_ray

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            if reply:
                conn.sendall(reply)
            time.sleep(1.5)  # then hang up, as a server that waits for more would time out

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    out = tmp_path / "out"
    address = f"127.0.0.1:{port}"
    argv = ["--sweep", str(_sweep(tmp_path)), "--out", str(out), "--ray", address]
    started = time.monotonic()
    try:
        assert_one_line_error(
            argv, f"--ray '{address}': what listens there does not speak gRPC",
            lambda: capsys.readouterr().err,
        )  # fmt: skip
    finally:
        server.close()
    assert time.monotonic() - started < sweep_ray.PROBE_TIMEOUT_S + 5
    assert not out.exists()


def test_ray_without_a_sweep_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(["--ray"], "give --sweep FILE too", lambda: capsys.readouterr().err)
    assert_one_line_error(["--ray", "auto"], "--ray runs", lambda: capsys.readouterr().err)


def test_ray_not_installed_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    out = tmp_path / "out"
    argv = ["--sweep", str(_sweep(tmp_path)), "--out", str(out), "--ray"]
    assert_one_line_error(argv, "pip install 'spargo[ray]'", lambda: capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(
    "address", ["", "auto", " auto ", "head:6379", "ray://head:10001", "ray://10.0.0.5:10001",
                "[::1]:6379", "ray://[fe80::1]:10001"]
)  # fmt: skip
def test_the_address_forms_ray_accepts(address: str) -> None:
    assert sweep_ray.parse_address(address) == address.strip()


def test_the_ray_extra_exists_and_the_dev_extra_pulls_it() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert any(r.startswith("ray[client]>=") for r in extras["ray"])
    assert "ray" in extras["dev"][0].partition("[")[2].rstrip("]").split(",")
    assert missing_extra("sim", "ray") == "ray"
    assert missing_extra("sim", "ray.exceptions") == "ray"
