"""Node labels are peer ids: exact mapping, the hub labelled 10, sanitising, mismatches."""

from __future__ import annotations

from pathlib import Path

import pytest

from spargo import topology as t
from spargo.node.view import build_view


def _hub(tmp_path: Path) -> Path:
    path = tmp_path / "hub.edges"
    path.write_text("".join(f"10 {i}\n" for i in range(10)))
    return path


def test_hub_labelled_10_maps_to_the_peer_called_10(tmp_path: Path) -> None:
    g = t.read_graph(_hub(tmp_path))
    ids = [str(i) for i in range(11)]  # string order puts "10" third: the old trap
    node_of = t.assign_peers(ids, g)
    assert g.degree(node_of["10"]) == 10
    assert all(g.degree(node_of[str(i)]) == 1 for i in range(10))
    view = build_view(g, ids, "10")
    assert sorted(view.neighbours, key=int) == [str(i) for i in range(10)]
    assert build_view(g, ids, "9").neighbours == ("10",)
    assert t.file_peer_ids(g) == [str(i) for i in range(11)]


def test_peer_names_that_are_not_the_labels_are_refused(tmp_path: Path) -> None:
    g = t.read_graph(_hub(tmp_path))
    with pytest.raises(t.TopologyError) as caught:
        t.assign_peers([f"peer-{i}" for i in range(11)], g)
    message = str(caught.value)
    assert "do not match the graph file's node labels" in message
    assert "labels without a peer: '0', '1', '2', '3' … (11 in all)" in message
    assert "peers without a label: 'peer-0', 'peer-1', 'peer-10', 'peer-2' … (11 in all)" in message
    with pytest.raises(
        t.TopologyError, match="labels without a peer: '10'; peers without a label: 'x'"
    ):
        t.assign_peers([*(str(i) for i in range(10)), "x"], g)


def test_generated_graphs_keep_the_sorted_assignment() -> None:
    assert t.assign_peers(["b", "a", "c"], t.line(3)) == {"a": 0, "b": 1, "c": 2}
    assert t.file_peer_ids(t.line(3)) is None


def test_labels_that_are_not_peer_ids_are_sanitised_deterministically(tmp_path: Path) -> None:
    path = tmp_path / "names.json"
    path.write_text(
        '{"nodes": [{"id": "a/b"}, {"id": "a_b"}, {"id": "x#y"}, {"id": "New York"}, '
        '{"id": "a+b"}], "edges": [{"source": "a/b", "target": "a_b"}, '
        '{"source": "a_b", "target": "x#y"}, {"source": "x#y", "target": "New York"}, '
        '{"source": "New York", "target": "a+b"}]}'
    )
    g = t.read_graph(path)
    assert t.label_map(g) == {
        "New York": "New York",
        "a+b": "a_b~2",
        "a/b": "a_b~3",
        "a_b": "a_b",
        "x#y": "x_y",
    }
    assert t.label_map(t.read_graph(path)) == t.label_map(g)  # same file, same names
    assert all(t.is_peer_id(p) for p in t.label_map(g).values())
    assert t.peer_ids_for_labels(["", " x", "ok"]) == ["node", "x", "ok"]
    assert not t.is_peer_id("tab\there")


def test_real_peers_default_to_the_files_labels(tmp_path: Path) -> None:
    from spargo.node.peer import _peers_from

    path = _hub(tmp_path)
    assert t.graph_peer_ids(str(path)) == [str(i) for i in range(11)]
    assert t.graph_peer_ids("ring") is None
    assert _peers_from({}, str(path)) == tuple(str(i) for i in range(11))
    assert _peers_from({"count": 3}, "ring") == ("peer-0", "peer-1", "peer-2")
