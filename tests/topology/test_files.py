"""Graph files: round trips with link attributes, relabelling, and rejected files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from spargo import topology as t

SUFFIXES = [".edgelist", ".txt", ".graphml", ".json"]


def _with_attributes() -> nx.Graph:
    g = t.ring(5)
    g.edges[0, 1].update(latency_ms=20.0, bandwidth_mbps=100.0, loss=0.01)
    g.edges[1, 2].update(latency_ms=5.5)
    g.edges[3, 4].update(loss=0.0)
    return g


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_edges_and_attributes(tmp_path: Path, suffix: str) -> None:
    g = _with_attributes()
    path = tmp_path / f"g{suffix}"
    t.write_graph(g, path)
    back = t.read_graph(path)
    assert sorted(back.nodes) == list(range(5))
    assert {frozenset(e) for e in back.edges} == {frozenset(e) for e in g.edges}
    for u, v in g.edges:
        assert t.edge_attributes(back, u, v) == t.edge_attributes(g, u, v)
    assert t.edge_attributes(back, 0, 1) == {
        "latency_ms": 20.0,
        "bandwidth_mbps": 100.0,
        "loss": 0.01,
    }
    assert t.edge_attributes(back, 2, 3) == {}
    # Written again from what was read, the file is identical (labels kept).
    again = tmp_path / f"again{suffix}"
    t.write_graph(back, again)
    assert again.read_text() == path.read_text()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_string_labels_relabelled_in_sorted_order(tmp_path: Path, suffix: str) -> None:
    raw = nx.Graph([("carol", "alice"), ("alice", "bob")])
    raw.nodes["alice"]["label"] = "alice"
    raw.nodes["bob"]["label"] = "bob"
    raw.nodes["carol"]["label"] = "carol"
    path = tmp_path / f"names{suffix}"
    t.write_graph(raw, path)
    g = t.read_graph(path)
    assert [g.nodes[i]["label"] for i in range(3)] == ["alice", "bob", "carol"]
    assert {frozenset(e) for e in g.edges} == {frozenset({0, 1}), frozenset({0, 2})}
    # Round trip keeps the names, so a second read numbers them the same.
    t.write_graph(g, tmp_path / f"b{suffix}")
    assert t.read_graph(tmp_path / f"b{suffix}").nodes(data=True) == g.nodes(data=True)


def test_integer_labels_sorted_numerically(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("# a comment\n10 2\n2 9   # trailing comment\n\n9 10 latency_ms=3\n")
    g = t.read_graph(path)
    assert [g.nodes[i]["label"] for i in range(3)] == [2, 9, 10]
    assert t.edge_attributes(g, 1, 2) == {"latency_ms": 3.0}


def test_networkx_style_edgelist_accepted(tmp_path: Path) -> None:
    path = tmp_path / "nx.edgelist"
    nx.write_edgelist(nx.Graph([(0, 1, {"latency_ms": 4.0}), (1, 2, {})]), path)
    g = t.read_graph(path)
    assert t.edge_attributes(g, 0, 1) == {"latency_ms": 4.0}


def test_node_link_with_links_key_and_networkx_graphml(tmp_path: Path) -> None:
    doc = {"nodes": [{"id": 0}, {"id": 1}], "links": [{"source": 0, "target": 1, "loss": 0.5}]}
    (tmp_path / "l.json").write_text(json.dumps(doc))
    assert t.edge_attributes(t.read_graph(tmp_path / "l.json"), 0, 1) == {"loss": 0.5}
    h = nx.Graph([("x", "y", {"bandwidth_mbps": 10.0, "weight": 3})])
    nx.write_graphml(h, tmp_path / "u.graphml")
    g = t.read_graph(tmp_path / "u.graphml")
    assert not g.is_directed()
    assert t.edge_attributes(g, 0, 1) == {"bandwidth_mbps": 10.0}
    assert g.graph["file"]["edge_attributes"] == ["bandwidth_mbps", "weight"]
    assert g.graph["file"]["used"] == ["bandwidth_mbps"]


def test_single_node_edgelist(tmp_path: Path) -> None:
    g = nx.Graph()
    g.add_node(0)
    t.write_graph(g, tmp_path / "one.txt")
    assert t.read_graph(tmp_path / "one.txt").number_of_nodes() == 1


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("split.txt", "0 1\n2 3\n", "disconnected \\(2 components\\)"),
        ("loop.txt", "0 1\n1 1\n", "self-loop"),
        ("empty.txt", "# nothing\n", "no nodes"),
        ("typo.txt", "0 1 latency=5\n", "unknown edge attribute 'latency'.*'latency_ms'"),
        ("one-way.graphml", nx.generate_graphml(nx.DiGraph([(0, 1)])), "not strongly connected"),
        ("neg.txt", "0 1 latency_ms=-1\n", "latency_ms must be"),
        ("nan.txt", "0 1 loss=abc\n", "not a number"),
        ("dict.txt", "# c\n0 1\n0 2 {oops\n", "as edgelist .*; line 3 '0 2 {oops'"),
        ("bad.json", "{not json", "not valid JSON"),
        ("nonodes.json", "[]", '"nodes" list'),
        ("noid.json", '{"nodes": [{"x": 1}]}', '"id"'),
        ("bad.graphml", "<graphml><oops", "as graphml .*line 1 '<graphml><oops': not well-formed"),
        ("graph.csv", "source,target,loss\n0,1,0\n1,2,0,7\n", "as csv .*line 3 '1,2,0,7'"),
        ("lone.csv", "source,target\n0,1\n2\n", "1 isolated node\\(s\\) with no edge \\(2\\)"),
    ],
)
def test_bad_files_rejected(tmp_path: Path, name: str, text: Any, message: str) -> None:
    path = tmp_path / name
    path.write_text(text if isinstance(text, str) else "".join(text))
    with pytest.raises(t.TopologyError, match=message) as caught:
        t.read_graph(path)
    assert "\n" not in str(caught.value)


def test_self_loop_in_graphml_and_binary_file(tmp_path: Path) -> None:
    nx.write_graphml(nx.Graph([(0, 1), (1, 1)]), tmp_path / "loop.graphml")
    with pytest.raises(t.TopologyError, match="self-loop"):
        t.read_graph(tmp_path / "loop.graphml")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(t.TopologyError, match="UTF-8"):
        t.read_graph(tmp_path / "bin.txt")


def test_missing_file_and_unknown_write_extension(tmp_path: Path) -> None:
    with pytest.raises(t.TopologyError, match="no such graph file"):
        t.read_graph(tmp_path / "missing.graphml")
    with pytest.raises(t.TopologyError, match=r"cannot write '\.gml'"):
        t.write_graph(t.ring(3), tmp_path / "g.gml")


def test_make_graph_from_file(tmp_path: Path) -> None:
    path = tmp_path / "g.graphml"
    t.write_graph(t.torus(3, 4), path)
    assert t.graph_size_from_spec(str(path)) == 12
    g = t.make_graph(str(path))
    assert g.number_of_nodes() == 12
    assert g.number_of_edges() == 24
    assert t.make_graph(str(path), 12).number_of_edges() == 24
    with pytest.raises(t.TopologyError, match="12 nodes but n=10"):
        t.make_graph(str(path), 10)
    with pytest.raises(t.TopologyError, match="no such graph file"):
        t.make_graph(str(tmp_path / "absent.json"))


def test_existing_file_without_extension_is_read(tmp_path: Path) -> None:
    path = tmp_path / "mygraph"
    path.write_text("0 1\n1 2\n")
    g = t.make_graph(str(path))
    assert g.number_of_edges() == 2
    assert g.graph["file"]["format"] == "edgelist"
    assert g.graph["file"]["detected_by"] == "default"


def test_edge_attributes_needs_an_edge() -> None:
    with pytest.raises(t.TopologyError, match="no edge 0 -- 2"):
        t.edge_attributes(t.ring(4), 0, 2)
