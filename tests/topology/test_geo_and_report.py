"""Geographic latency, drawing at coordinates, and what ``spargo topology FILE`` reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx
import pytest

from spargo import topology as t
from spargo.topology import cli

R = t.geo.EARTH_RADIUS_KM  # type: ignore[attr-defined]


def _zoo_triangle(path: Path) -> Path:
    """Three nodes as the Internet Topology Zoo writes them (Latitude/Longitude, degrees)."""
    g = nx.Graph()
    g.add_node("Accra", Latitude=0.0, Longitude=0.0)  # on the equator, at Greenwich
    g.add_node("East", Latitude=0.0, Longitude=60.0)  # 60° east along the equator
    g.add_node("Pole", Latitude=90.0, Longitude=0.0)  # 90° from both
    g.add_edges_from([("Accra", "East"), ("East", "Pole"), ("Pole", "Accra")], LinkLabel="x")
    nx.write_graphml(g, path)
    return path


def test_great_circle_distances() -> None:
    assert t.great_circle_km(0, 0, 0, 60) == pytest.approx(R * math.pi / 3, rel=1e-12)
    assert t.great_circle_km(0, 0, 90, 0) == pytest.approx(R * math.pi / 2, rel=1e-12)
    assert t.great_circle_km(10, 20, 10, 20) == 0.0
    paris_london = t.great_circle_km(48.8566, 2.3522, 51.5074, -0.1278)
    assert paris_london == pytest.approx(343.5, abs=1.0)


def test_geo_latency_on_a_triangle_with_known_coordinates(tmp_path: Path) -> None:
    g = t.read_graph(_zoo_triangle(tmp_path / "zoo.graphml"))
    assert g.graph["file"]["used"] == ["Latitude", "Longitude"]
    index = {g.nodes[v]["label"]: v for v in g}
    out = t.with_geo_latency(g, t.parse_latency_from("geo"), base_ms=2.0)
    ms = {frozenset((out.nodes[u]["label"], out.nodes[v]["label"])): d["latency_ms"]
          for u, v, d in out.edges(data=True)}  # fmt: skip
    assert ms[frozenset(("Accra", "East"))] == pytest.approx(2.0 + R * math.pi / 3 / 200.0)
    assert ms[frozenset(("East", "Pole"))] == pytest.approx(2.0 + R * math.pi / 2 / 200.0)
    assert ms[frozenset(("Pole", "Accra"))] == pytest.approx(2.0 + R * math.pi / 2 / 200.0)
    slower = t.with_geo_latency(g, t.parse_latency_from("geo:100"))
    assert slower.edges[index["Accra"], index["East"]]["latency_ms"] == pytest.approx(
        R * math.pi / 3 / 100.0
    )
    assert "latency_ms" not in g.edges[index["Accra"], index["East"]]  # the input is untouched


@pytest.mark.parametrize("spec", ["geo:0", "geo:-5", "geo:fast", "distance", "geo:inf"])
def test_bad_latency_from(spec: str) -> None:
    with pytest.raises(t.TopologyError, match="--latency-from"):
        t.parse_latency_from(spec)


def test_geo_latency_needs_every_coordinate(tmp_path: Path) -> None:
    path = tmp_path / "half.graphml"
    g = nx.path_graph(3)
    g.nodes[0].update(Latitude=1.0, Longitude=2.0)
    nx.write_graphml(g, path)
    with pytest.raises(t.TopologyError, match="missing on 1, 2"):
        t.with_geo_latency(t.read_graph(path))


def test_cli_reports_what_was_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _zoo_triangle(tmp_path / "zoo.graphml")
    png = tmp_path / "zoo.png"
    assert cli.main([str(path), "--latency-from", "geo", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "format              graphml (detected from content)" in out
    assert "node attributes     Latitude, Longitude" in out
    assert "edge attributes     LinkLabel" in out
    assert "used by spargo      Latitude, Longitude, latency_ms" in out
    assert "directed            no" in out
    assert all(len(line) <= 80 for line in out.splitlines() if str(tmp_path) not in line)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main([str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["file"]["format"] == "graphml"
    assert summary["file"]["directed"] is False


def test_cli_directed_edge_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cycle.edges"
    path.write_text("a b\nb c\nc a\n")
    assert cli.main([str(path), "--directed", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["directed"], summary["one_way_arcs"], summary["mixing"]) == (
        True,
        3,
        "push-sum",
    )
    assert cli.main([str(path), "--directed"]) == 0
    assert "directed            yes, 3 one-way arcs" in capsys.readouterr().out


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {
        "empty": ("empty.edges", b""),
        "binary": ("garbage.bin", bytes(range(256)) * 4),
        "self-loop": ("loop.edges", b"0 1\n1 1\n1 2\n"),
        "isolated": ("lonely.graphml", nx.generate_graphml(nx.Graph([(0, 1)]))),
        "disconnected": ("split.el", b"0 1\n2 3\n"),
        "bad line": ("bad.csv", b"source,target,loss\n0,1,0\n1,2,0,9\n"),
    }
    out = {}
    for key, (name, content) in files.items():
        path = tmp / name
        if key == "isolated":
            lonely = nx.Graph([(0, 1)])
            lonely.add_node(7)
            nx.write_graphml(lonely, path)
        else:
            path.write_bytes(content if isinstance(content, bytes) else b"")
        out[key] = path
    return out


NEEDLES = {
    "empty": "no nodes",
    "binary": "cannot read it as edgelist (the default); line 2: not UTF-8 text",
    "self-loop": "self-loop on node '1'",
    "isolated": "1 isolated node(s) with no edge (7)",
    "disconnected": "disconnected (2 components)",
    "bad line": "cannot read it as csv (by extension); line 3 '1,2,0,9'",
}


@pytest.mark.parametrize("kind", list(NEEDLES))
def test_bad_files_one_line_exit_2(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _bad_files(tmp_path)[kind]
    assert cli.main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"spargo topology: error: {path}")
    assert NEEDLES[kind] in lines[0]


def test_generator_refuses_file_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ring", "--nodes", "5", "--directed"]) == 2
    assert "--directed applies to graph files" in capsys.readouterr().err
