"""Every format networkx reads: files written by networkx's own writers, and by hand."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import pytest

from spargo import topology as t

#: A 5-node graph with a link attribute, labels 0..4 as text (as most writers store them).
EDGES = [(0, 1, 20.0), (1, 2, 5.0), (2, 3, 1.0), (3, 4, 2.0), (4, 0, 3.0), (0, 2, 7.0)]


def _source(directed: bool = False) -> nx.Graph:
    g: nx.Graph = nx.DiGraph() if directed else nx.Graph()
    for u, v, ms in EDGES:
        g.add_edge(u, v, latency_ms=ms)
    return g


def _mtx(g: nx.Graph, path: Path) -> None:
    from scipy.io import mmwrite

    mmwrite(str(path), nx.to_scipy_sparse_array(g, nodelist=sorted(g), weight="latency_ms"))


Writer = Callable[[nx.Graph, Path], object]
WRITERS: list[tuple[str, str, Writer]] = [
    ("graph.edges", "edgelist", lambda g, p: nx.write_edgelist(g, p)),
    ("graph.el", "edgelist", lambda g, p: nx.write_edgelist(g, p, data=False)),
    ("graph.txt", "edgelist", lambda g, p: nx.write_weighted_edgelist(g, p)),
    ("graph.adjlist", "adjlist", lambda g, p: nx.write_adjlist(g, p)),
    ("graph.gml", "gml", lambda g, p: nx.write_gml(g, p)),
    ("graph.gexf", "gexf", lambda g, p: nx.write_gexf(g, p)),
    ("graph.net", "pajek", lambda g, p: nx.write_pajek(g, p)),
    ("graph.graphml", "graphml", lambda g, p: nx.write_graphml(g, p)),
    ("graph.json", "json", lambda g, p: p.write_text(json.dumps(nx.node_link_data(g)))),
    ("graph.mtx", "mtx", _mtx),
]
#: Writers whose files keep the link attribute under its own name.
KEEPS_LATENCY = {"graph.edges", "graph.gml", "graph.gexf", "graph.graphml", "graph.json"}


@pytest.mark.filterwarnings("ignore:Edge attribute latency_ms is not processed:UserWarning")
@pytest.mark.parametrize(("name", "fmt", "write"), WRITERS, ids=[w[0] for w in WRITERS])
def test_each_format_from_networkx_writer(
    tmp_path: Path, name: str, fmt: str, write: Writer
) -> None:
    path = tmp_path / name
    write(_source(), path)
    g = t.read_graph(path)
    assert g.graph["file"]["format"] == fmt
    offset = 1 if fmt == "mtx" else 0  # Matrix Market rows are 1-based in the file
    labels = {v: int(g.nodes[v]["label"]) - offset for v in g.nodes}
    assert {frozenset((labels[u], labels[v])) for u, v in g.edges} == {
        frozenset((u, v)) for u, v, _ in EDGES
    }
    assert [g.nodes[v]["peer_id"] for v in range(5)] == [str(i + offset) for i in range(5)]
    if name in KEEPS_LATENCY:
        got = {frozenset((labels[u], labels[v])): d["latency_ms"] for u, v, d in g.edges(data=True)}
        assert got == {frozenset((u, v)): ms for u, v, ms in EDGES}
        assert g.graph["file"]["used"] == ["latency_ms"]


def test_content_beats_extension_and_format_overrides(tmp_path: Path) -> None:
    path = tmp_path / "actually-graphml.txt"
    nx.write_graphml(_source(), path)
    assert t.read_graph(path).graph["file"]["format"] == "graphml"
    assert t.read_graph(path).graph["file"]["detected_by"] == "content"
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("a b\nb c\n")
    with pytest.raises(t.TopologyError, match=r"isolated node.*a b"):
        t.read_graph(spaced)  # no commas: each line is one label
    g = t.read_graph(spaced, "edgelist")
    assert g.graph["file"]["detected_by"] == "given"
    assert [g.nodes[v]["label"] for v in g] == ["a", "b", "c"]
    with pytest.raises(t.TopologyError, match="--format 'dot' is unknown"):
        t.read_graph(spaced, "dot")


def test_hand_written_edge_list_with_comments_weights_and_attributes(tmp_path: Path) -> None:
    path = tmp_path / "out.konect"
    path.write_text(
        "% sym unweighted\n% 3 3 3\n# a hash comment\n"
        "a b 0.5   # weight, trailing comment\nb c 2\n\nc a 1.5\n"
    )
    g = t.read_graph(path)
    assert g.graph["file"]["edge_attributes"] == ["weight"]
    assert g.graph["file"]["used"] == []
    assert t.edge_attributes(g, 0, 1) == {}  # a weight is reported, not used
    spargo_style = tmp_path / "links.el"
    spargo_style.write_text("0 1 latency_ms=3 loss=0.1\n1 2 bandwidth_mbps=10\n2 0\n")
    h = t.read_graph(spargo_style)
    assert t.edge_attributes(h, 0, 1) == {"latency_ms": 3.0, "loss": 0.1}
    assert t.edge_attributes(h, 1, 2) == {"bandwidth_mbps": 10.0}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("links.csv", "# exported\nsource,target,latency_ms,loss,kind\nA,B,10,0.01,fibre\n"
         "B,C,20,0,radio\nC,A,5,0,fibre\n"),
        ("links.tsv", "from\tto\tlatency_ms\nA\tB\t10\nB\tC\t20\nC\tA\t5\n"),
        ("noheader.csv", "A,B,10\nB,C,20\nC,A,5\n"),
    ],
)  # fmt: skip
def test_csv_and_tsv_with_or_without_header(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    g = t.read_graph(path)
    assert g.graph["file"]["format"] == "csv"
    assert [g.nodes[v]["peer_id"] for v in range(3)] == ["A", "B", "C"]
    if name.startswith("noheader"):
        assert g.graph["file"]["edge_attributes"] == ["weight"]
    else:
        assert g.edges[0, 1]["latency_ms"] == 10.0
        assert g.edges[1, 2]["latency_ms"] == 20.0
    if name == "links.csv":
        assert g.graph["file"]["edge_attributes"] == ["kind", "latency_ms", "loss"]
        assert g.graph["file"]["used"] == ["latency_ms", "loss"]
        assert t.edge_attributes(g, 0, 1) == {"latency_ms": 10.0, "loss": 0.01}


def test_pajek_and_gml_written_by_hand(tmp_path: Path) -> None:
    net = tmp_path / "g.net"
    net.write_text('*Vertices 3\n1 "Paris"\n2 "Lyon"\n3 "Nice"\n*Edges\n1 2\n2 3\n3 1\n')
    assert sorted(t.label_map(t.read_graph(net))) == ["Lyon", "Nice", "Paris"]
    gml = tmp_path / "g.gml"
    gml.write_text(
        "graph [\n  node [ id 0 ]\n  node [ id 1 ]\n  node [ id 2 ]\n"
        "  edge [ source 0 target 1 latency_ms 4 ]\n  edge [ source 1 target 2 ]\n]\n"
    )
    g = t.read_graph(gml)  # no labels: nodes are named by id
    assert [g.nodes[v]["peer_id"] for v in range(3)] == ["0", "1", "2"]
    assert t.edge_attributes(g, 0, 1) == {"latency_ms": 4.0}


def test_directed_file_keeps_both_directions(tmp_path: Path) -> None:
    path = tmp_path / "d.graphml"
    h = nx.DiGraph()
    h.add_edge("a", "b", latency_ms=5.0, loss=0.1, bandwidth_mbps=100.0)
    h.add_edge("b", "a", latency_ms=50.0, loss=0.0, bandwidth_mbps=10.0)
    h.add_edge("b", "c", latency_ms=1.0)
    h.add_edge("c", "b", latency_ms=2.0)
    nx.write_graphml(h, path)
    g = t.read_graph(path)
    assert g.is_directed()
    assert t.edge_attributes(g, 0, 1) == {"latency_ms": 5.0, "loss": 0.1, "bandwidth_mbps": 100.0}
    assert t.edge_attributes(g, 1, 0) == {"latency_ms": 50.0, "loss": 0.0, "bandwidth_mbps": 10.0}
    assert not t.is_one_way(g)
    assert not t.gossip_graph(g).is_directed()  # both ways: gossip as on the undirected graph
    # An edge list read with directed=True is one-way where only one arc is listed.
    ring = tmp_path / "cycle.edges"
    ring.write_text("0 1\n1 2\n2 0\n")
    d = t.read_graph(ring, directed=True)
    assert t.one_way_arcs(d) == [(0, 1), (1, 2), (2, 0)]
    assert t.in_neighbours(d, 0) == [2]
    # An undirected file asked for as directed gets arcs both ways.
    both = t.read_graph(tmp_path / "d.graphml", directed=True)
    assert both.number_of_edges() == 4


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("g.net", '*Vertices 3\n1 a\n2 b\n3 c\n*Edges\n1 2\n2 "3\n', "line 7 '2 \"3'"),
        ("g.mtx", "%%MatrixMarket matrix coordinate pattern symmetric\n% c\n3 3 2\n2 1\nx 3\n",
         "line 5 'x 3'"),
        ("bad.mtx", "3 3 2\n2 1\n", "line 1 '3 3 2'"),
        ("g.gml", "graph [\n node [ id 0 ]\n node [ id 1\n", "line 4"),
        ("g.json", '{"nodes": [\n{"id": 1},\n{"id": }\n]}', "line 3 '{\"id\": }'"),
    ],
)  # fmt: skip
def test_first_offending_line_per_format(tmp_path: Path, name: str, text: str, line: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(t.TopologyError, match="cannot read it as") as caught:
        t.read_graph(path)
    assert line in str(caught.value)
