"""The ``topology`` command, the summary and the drawing."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spargo import topology as t
from spargo.topology import cli


def test_describe_ring() -> None:
    summary = t.describe(t.ring(10))
    assert summary["nodes"] == 10
    assert summary["edges"] == 10
    assert summary["degree_min"] == summary["degree_max"] == 2
    assert summary["degree_mean"] == 2.0
    assert summary["diameter"] == 5
    assert 0 < summary["spectral_gap"] < 1
    assert summary["rounds_to_consensus"] == t.rounds_to_consensus(
        t.metropolis_hastings(t.ring(10))
    )
    assert t.describe(t.complete(1))["diameter"] == 0


def test_cli_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ring", "--nodes", "12"]) == 0
    out = capsys.readouterr().out
    assert "nodes               12" in out
    assert "spectral gap (MH)" in out
    assert "diameter" in out


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["regular:3", "--nodes", "10", "--seed", "4", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["topology"] == "regular:3"
    assert data["nodes"] == 10
    assert data["degree_max"] == 3
    assert set(data) >= {"edges", "degree_mean", "diameter", "spectral_gap", "rounds_to_consensus"}


def test_cli_png_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "g.json"
    t.write_graph(t.grid(12), graph)
    png = tmp_path / "g.png"
    assert cli.main([str(graph), "--png", str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"] == 12
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["nonsense", "--nodes", "5"],
        ["ring", "--nodes", "2"],
        ["regular:3", "--nodes", "5"],
        ["ring"],
        ["missing.graphml"],
        ["ring", "--nodes", "5", "--png", "/nonexistent-dir/x.png"],
        ["ring", "--nodes", "abc"],
        [],
    ],
)
def test_cli_bad_input_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("spargo topology: error: ")


def test_make_graph_accepts_numpy_counts() -> None:
    assert t.make_graph("ring", np.int64(6)).number_of_nodes() == 6  # type: ignore[arg-type]


def test_add_parser_registers_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="spargo")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["topology", "star", "--nodes", "5", "--json"])
    assert args.command == "topology"
    assert cli.run(args) == 0
    assert json.loads(capsys.readouterr().out)["degree_max"] == 4


def test_module_runs_without_torch() -> None:
    code = (
        "import sys, runpy; sys.argv = ['x', 'hypercube', '--nodes', '8', '--json'];"
        "import topology.cli as c; rc = c.main(sys.argv[1:]);"
        "bad = [m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules];"
        "print(bad); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
    bad = subprocess.run(
        [sys.executable, "-m", "spargo.topology.cli", "ring", "--nodes", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
