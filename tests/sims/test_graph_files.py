"""Graph files in the simulator: peers named by labels, per-arc links, one-way gossip, geo."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from spargo import topology
from spargo.sims.cli import _scenario_from_args
from spargo.sims.clock import run_virtual
from spargo.sims.graphs import needs_symmetric_weights, swarm_graph
from spargo.sims.network import Link, edge_links
from spargo.sims.report import write_reports
from spargo.sims.runner import run
from spargo.sims.scenario import ScenarioError
from spargo.sims.swarm import Swarm
from tests.sims.conftest import assert_one_line_error, small


def _directed_file(path: Path) -> Path:
    g = nx.DiGraph()
    g.add_edge("a", "b", latency_ms=5.0, loss=0.0, bandwidth_mbps=100.0)
    g.add_edge("b", "a", latency_ms=50.0, loss=0.5, bandwidth_mbps=1.0)
    g.add_edge("b", "c", latency_ms=1.0)
    g.add_edge("c", "b", latency_ms=2.0)
    nx.write_graphml(g, path)
    return path


def test_directed_file_keeps_each_directions_link_in_the_simulator(tmp_path: Path) -> None:
    scenario = small(topology=str(_directed_file(tmp_path / "d.graphml")), nodes=3, rounds=1)
    swarm = Swarm(scenario, on_record=lambda _m: None)
    assert swarm.ids == ["a", "b", "c"]
    (delays,) = swarm.policy.rules  # the link faults: per-arc delays and losses
    links = delays.links  # type: ignore[attr-defined]
    assert links[("a", "b")] == Link(latency_s=0.005, bandwidth_bps=100e6, loss=0.0)
    assert links[("b", "a")] == Link(latency_s=0.05, bandwidth_bps=1e6, loss=0.5)
    assert links[("b", "c")].latency_s == pytest.approx(0.001)
    assert links[("c", "b")].latency_s == pytest.approx(0.002)
    model = swarm.policy
    assert model("a", "b", 1000) == pytest.approx(0.005 + 8000 / 100e6)
    delays = [model("b", "a", 1000) for _ in range(400)]
    assert 100 < delays.count(None) < 300  # b -> a loses half, a -> b none
    assert all(d == pytest.approx(0.05 + 8000 / 1e6) for d in delays if d is not None)
    assert swarm.nodes["b"].view.neighbours == ("a", "c")


def test_hub_labelled_10_in_the_simulator(tmp_path: Path) -> None:
    path = tmp_path / "hub.edges"
    path.write_text("".join(f"10 {i}\n" for i in range(10)))
    swarm = Swarm(small(topology=str(path), nodes=11, rounds=1), on_record=lambda _m: None)
    assert sorted(swarm.ids, key=int) == [str(i) for i in range(11)]
    assert sorted(swarm.nodes["10"].view.neighbours, key=int) == [str(i) for i in range(10)]
    assert swarm.nodes["3"].view.neighbours == ("10",)


def _one_way_cycle(path: Path) -> Path:
    path.write_text("x/0 x/1\nx/1 x/2\nx/2 x/3\nx/3 x/0\nx/0 x/2\n")
    return path


def test_one_way_arcs_refuse_symmetric_methods(tmp_path: Path) -> None:
    spec = str(_one_way_cycle(tmp_path / "cycle.edges"))
    with pytest.raises(ScenarioError, match=r"5 one-way arc\(s\) \(e.g. x/0 -> x/1\).*pushsum"):
        swarm_graph(small(topology=spec, nodes=4, directed=True))
    assert needs_symmetric_weights("dense")
    assert needs_symmetric_weights("spafl")
    assert not needs_symmetric_weights("pushsum")
    assert not needs_symmetric_weights("pushsum_rs")
    # Read undirected (no --directed), the same file is an ordinary graph.
    assert not swarm_graph(small(topology=spec, nodes=4)).is_directed()


def test_push_sum_follows_the_arcs_and_the_labels_are_written(tmp_path: Path) -> None:
    spec = str(_one_way_cycle(tmp_path / "cycle.edges"))
    scenario = small(topology=spec, nodes=4, directed=True, method="pushsum", rounds=3)
    swarm = Swarm(scenario, on_record=lambda _m: None)
    view = swarm.nodes["x_0"].view
    assert view.targets(0) == ["x_1", "x_2"]  # successors only
    assert view.expected_senders(0) == ["x_3"]  # predecessors
    assert swarm.nodes["x_2"].view.expected_senders(1) == ["x_0", "x_1"]
    pairs: Counter[tuple[str, str]] = Counter()
    policy = swarm.policy

    def counted(sender: str, receiver: str, nbytes: int) -> float | None:
        pairs[(sender, receiver)] += 1
        return policy(sender, receiver, nbytes)

    swarm.network.policy = counted
    run_virtual(swarm.run())
    arcs = {("x_0", "x_1"), ("x_0", "x_2"), ("x_1", "x_2"), ("x_2", "x_3"), ("x_3", "x_0")}
    assert set(pairs) == arcs  # nothing ever travels against an arc
    assert min(pairs.values()) >= 3  # every round's share went out on every arc
    result = run(scenario)
    assert result.summary["merges"] >= 4 * 2
    assert result.peer_labels == {"x/0": "x_0", "x/1": "x_1", "x/2": "x_2", "x/3": "x_3"}
    write_reports(result, tmp_path / "run", plots=False)
    assert json.loads((tmp_path / "run" / "peers.json").read_text()) == result.peer_labels


def test_geo_latency_in_the_simulator(tmp_path: Path) -> None:
    g = nx.Graph()
    for name, lat, lon in (("A", 0.0, 0.0), ("B", 0.0, 60.0), ("C", 90.0, 0.0)):
        g.add_node(name, Latitude=lat, Longitude=lon)
    g.add_edges_from([("A", "B"), ("B", "C"), ("C", "A")])
    nx.write_graphml(g, tmp_path / "tri.graphml")
    s = small(topology=str(tmp_path / "tri.graphml"), nodes=3, latency_from="geo:100",
              latency_ms=3.0)  # fmt: skip
    graph = swarm_graph(s)
    links = edge_links(graph, topology.assign_peers(["A", "B", "C"], graph), Link())
    km = topology.geo.EARTH_RADIUS_KM * math.pi / 3  # type: ignore[attr-defined]
    assert links[("A", "B")].latency_s == pytest.approx((3.0 + km / 100.0) / 1e3)
    assert links[("B", "A")].latency_s == links[("A", "B")].latency_s


def test_flags_reach_the_scenario(tmp_path: Path) -> None:
    from spargo.cli import build_parser

    path = tmp_path / "g.dat"
    path.write_text("a,b\nb,c\nc,a\n")
    args = build_parser().parse_args(
        ["sim", "--topology", str(path), "--format", "csv", "--directed", "--latency-from",
         "geo:150"]
    )  # fmt: skip
    s = _scenario_from_args(args)
    assert (s.topology_format, s.directed, s.latency_from, s.nodes) == ("csv", True, "geo:150", 3)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--topology", "ring", "--format", "dot"], "--format 'dot' is unknown"),
        (["--topology", "ring", "--latency-from", "geo:0"], "KM_PER_MS must be a positive"),
        (["--topology", "ring", "--directed"], "--directed applies to graph files"),
    ],
)
def test_bad_flags_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--nodes", "4", "--rounds", "1", "--task", "synthetic", "--no-plots", "--quiet"]
    assert_one_line_error([*argv, *common], needle, lambda: capsys.readouterr().err)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "no nodes"),
        (b"\x00\xff\xfe garbage \x80\x81", "not UTF-8 text"),
        (b"0 1\n1 1\n", "self-loop"),
        (b"0 1\n2 3\n", "disconnected"),
    ],
)
def test_bad_graph_files_one_line(
    tmp_path: Path, content: bytes, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.edges"
    path.write_bytes(content)
    argv = ["--topology", str(path), "--rounds", "1", "--task", "synthetic", "--quiet"]
    assert_one_line_error(argv, needle, lambda: capsys.readouterr().err)
