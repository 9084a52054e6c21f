"""The dashboard's state model: status messages in, page state out, on an injected clock.

Stale peers, ghosts from retained presence, malformed status messages (dropped and counted),
per-round series with a min-max band, traffic edges, stable positions, and the alerts:
silent peers, drop spikes by class, duplicate ids."""

from __future__ import annotations

import json
import math

import networkx as nx
import pytest

from spargo.node.metrics import RoundMetrics
from spargo.node.watch_view import SwarmView
from spargo.node.web.feed import RoundFeed
from spargo.node.web.layout import spiral_seat
from spargo.node.web.state import WebState, malformed

NOW = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def status(r: int, at: float, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {"round": r, "accuracy": 0.5 + r / 100, "loss": 1.0 - r / 100,
            "density": 1.0, "bytes_sent": 1_000_000 * (r + 1), "bytes_received": 10,
            "drops": 0, "updated_at": at}  # fmt: skip
    base.update(extra)
    return base


def make(clock: Clock, **kwargs: object) -> WebState:
    return WebState(SwarmView("lab", stale_s=5.0, hide_s=60.0, clock=clock), **kwargs)  # type: ignore[arg-type]


def alerts(state: WebState, kind: str) -> list[str]:
    return [a["text"] for a in state.snapshot()["alerts"] if a["kind"].startswith(kind)]


def test_peers_rows_and_series_with_band() -> None:
    clock = Clock()
    state = make(clock)
    for peer, offset in (("peer-0", 0.0), ("peer-1", 0.2)):
        state.apply("presence", peer, {"online": True, "updated_at": clock.now})
        for r in range(3):
            state.apply("status", peer, status(r, clock.now, accuracy=0.5 + offset + r / 10))
    snap = state.snapshot()
    json.dumps(snap, allow_nan=False)  # what the WebSocket sends
    assert [p["peer_id"] for p in snap["peers"]] == ["peer-0", "peer-1"]
    assert {p["state"] for p in snap["peers"]} == {"online"}
    series = snap["series"]
    assert series["round"] == [0, 1, 2]
    assert series["accuracy"]["min"] == [0.5, 0.6, 0.7]
    assert series["accuracy"]["max"] == [0.7, 0.8, 0.9]
    assert series["accuracy"]["mean"] == pytest.approx([0.6, 0.7, 0.8])
    assert series["mb_sent"]["mean"] == [1.0, 1.0, 1.0]  # 1 MB a round, from the running total
    assert snap["alerts"] == []


def test_stale_peer_then_gone_and_silent_rounds() -> None:
    clock = Clock()
    state = make(clock, silent_rounds=3)
    for peer in ("a", "b"):
        state.apply("presence", peer, {"online": True, "updated_at": clock.now})
        state.apply("status", peer, status(0, clock.now))
    for r in range(1, 5):  # a goes on, b is silent
        clock.now += 2.0
        state.apply("status", "a", status(r, clock.now))
    rows = {p["peer_id"]: p for p in state.snapshot()["peers"]}
    assert rows["b"]["state"] == "stale"
    assert rows["b"]["rounds_behind"] == 4
    assert alerts(state, "silent") == ["b: silent for 4 rounds (last round 0)"]
    assert alerts(state, "stale") == ["b: stale, nothing heard for 8 s"]
    state.apply("presence", "b", {"online": False, "updated_at": clock.now})  # its will
    rows = {p["peer_id"]: p for p in state.snapshot()["peers"]}
    assert rows["b"]["state"] == "offline"
    assert alerts(state, "silent") == []  # a peer that left is not silent…
    assert alerts(state, "gone") == [  # …but gone while others run
        "b: gone after round 0 while others run (left, or its connection died)"
    ]
    state.apply("presence", "a", {"online": False, "updated_at": clock.now})
    assert alerts(state, "gone") == []  # the end of the run: everyone left


def test_ghosts_from_retained_presence_are_hidden_and_no_yardstick() -> None:
    clock = Clock()
    state = make(clock)
    old = clock.now - 3600  # retained by the broker from an earlier run
    state.apply("presence", "ghost", {"online": True, "updated_at": old})
    state.apply("status", "ghost", status(500, old))
    state.apply("presence", "peer-0", {"online": True, "updated_at": clock.now})
    state.apply("status", "peer-0", status(3, clock.now))
    snap = state.snapshot()
    assert [p["peer_id"] for p in snap["peers"]] == ["peer-0"]
    assert snap["hidden"] == 1
    assert snap["peers"][0]["rounds_behind"] == 0  # not 497 behind a ghost
    assert alerts(state, "silent") == []


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (None, "not a JSON object"),
        ({"round": "7"}, "round"),
        ({"round": -1}, "round"),
        ({"round": True}, "round"),
        ({"round": 1, "accuracy": "high"}, "accuracy"),
        ({"round": 1, "bytes_sent": [1]}, "bytes_sent"),
        ({"round": 1, "drops": -3}, "drops"),
        ({"round": 1, "drops": {"replay": "x"}}, "drops"),
        ({"round": 1, "drop_reasons": [1, 2]}, "drop_reasons"),
        ({"round": 1, "updated_at": False}, "updated_at"),
    ],
)
def test_malformed_status_is_dropped_and_counted(payload: object, why: str) -> None:
    clock = Clock()
    state = make(clock)
    assert malformed("status", "p", payload) is not None  # type: ignore[arg-type]
    assert why in str(malformed("status", "p", payload))  # type: ignore[arg-type]
    assert state.apply("status", "p", payload) is False  # type: ignore[arg-type]
    snap = state.snapshot()
    assert snap["peers"] == []  # never shown
    assert snap["malformed"] == 1
    assert alerts(state, "malformed") == ["p: 1 malformed status message(s) dropped"]


def test_malformed_presence_and_counts_per_peer() -> None:
    state = make(Clock())
    assert not state.apply("presence", "p", {"online": "yes"})
    assert not state.apply("presence", "p", None)
    assert state.apply("status", "q", status(0, NOW))
    snap = state.snapshot()
    assert snap["malformed"] == 2
    assert [p["peer_id"] for p in snap["peers"]] == ["q"]


def test_non_finite_numbers_become_null() -> None:
    state = make(Clock())
    state.apply("status", "p", status(0, NOW, accuracy=math.nan, loss=math.inf))
    snap = state.snapshot()
    json.dumps(snap, allow_nan=False)
    assert snap["peers"][0]["accuracy"] is None
    assert snap["series"]["accuracy"]["mean"] == [None]


def test_drop_spikes_by_class() -> None:
    clock = Clock()
    state = make(clock, spike=5)
    state.apply("status", "p", status(0, NOW, drop_reasons={"replay": 1}))
    state.apply("status", "p", status(1, NOW, drop_reasons={"replay": 9, "unauthenticated": 2}))
    state.apply("status", "p", status(2, NOW, drop_reasons={"replay": 9, "unauthenticated": 8,
                                                             "malformed": 4}))  # fmt: skip
    assert alerts(state, "spike") == ["p: 6 auth drops by round 2", "p: 8 replay drops by round 1"]
    # Without per-reason counts, a spike of the total still shows.
    state.apply("status", "q", status(0, NOW, drops=0))
    state.apply("status", "q", status(1, NOW, drops=12))
    assert "q: 12 drops by round 1" in alerts(state, "spike")
    assert state.snapshot()["series"]["drops"]["max"][1] == 12


def test_duplicate_ids_and_identity_claims() -> None:
    clock = Clock()
    state = make(clock)
    state.apply("status", "p", status(10, NOW))
    state.apply("status", "p", status(0, NOW))  # one restart from scratch: no alarm
    assert alerts(state, "duplicate") == []
    for r in (11, 1, 12, 2):  # two processes with one id, interleaved
        clock.now += 1
        state.apply("status", "p", status(r, clock.now))
    assert alerts(state, "duplicate") == [
        "p: rounds go back and forth (12 then 2); two peers may share this id"
    ]
    assert not state.apply("status", "p", status(3, NOW, peer_id="mallory"))
    assert alerts(state, "identity") == ["p: status claims to come from 'mallory'"]


def test_topology_positions_are_stable_and_traffic_edges_fade() -> None:
    clock = Clock()
    state = make(clock, traffic_s=10.0)
    ids = [f"peer-{i}" for i in range(5)]
    state.set_topology(nx.cycle_graph(5), ids)
    before = dict(state.positions)
    state.apply("status", "newcomer", status(0, NOW))
    state.add_traffic("peer-0", "peer-1", 300)
    state.add_traffic("peer-1", "peer-0", 200)
    assert {p: state.positions[p] for p in ids} == before  # a newcomer moves nobody
    assert state.positions["newcomer"] not in before.values()
    edges = {(e["a"], e["b"]): e for e in state.snapshot()["edges"]}
    assert len(edges) == 5
    assert edges[("peer-0", "peer-1")]["bytes"] == 500
    assert edges[("peer-0", "peer-1")]["recent"] == 1.0
    assert edges[("peer-2", "peer-3")]["recent"] == 0.0
    clock.now += 5
    state.add_traffic("peer-0", "newcomer", 10)  # an edge the graph does not have
    state.add_traffic("peer-1", "peer-2", 10)
    state.add_traffic("peer-2", "peer-1", 10)
    edges = {(e["a"], e["b"]): e for e in state.snapshot()["edges"]}
    assert edges[("peer-0", "peer-1")]["recent"] == 0.5
    assert edges[("peer-1", "peer-2")]["recent"] == 1.0
    assert edges[("newcomer", "peer-0")]["graph"] is False
    clock.now += 4
    state.add_traffic("peer-1", "peer-2", 10)  # peer-2 went quiet: only gossip *to* it
    edges = {(e["a"], e["b"]): e for e in state.snapshot()["edges"]}
    assert edges[("peer-1", "peer-2")]["recent"] == 0.6  # as alive as the quieter way
    # The same graph lays out the same way every time.
    again = make(clock)
    again.set_topology(nx.cycle_graph(5), ids)
    assert {p: again.positions[p] for p in ids} == before


def test_geographic_layout_from_coordinates() -> None:
    g = nx.path_graph(3)
    for v, (lat, lon) in enumerate(((48.1, 11.6), (52.5, 13.4), (40.4, -3.7))):
        g.nodes[v].update(lat=lat, lon=lon)
    state = make(Clock())
    state.set_topology(g, ["1-munich", "2-berlin", "3-madrid"])  # sorted ids take nodes 0, 1, 2
    assert state.geographic
    assert state.positions["2-berlin"] == (13.4, -52.5)  # north is up on the page
    assert state.snapshot()["geographic"] is True


def test_spiral_seats_are_distinct() -> None:
    seats = [spiral_seat(i) for i in range(50)]
    assert len(set(seats)) == 50


def test_round_feed_from_simulator_records() -> None:
    clock = Clock()
    state = make(clock)
    ids = ["p0", "p1", "p2"]
    state.set_topology(nx.path_graph(3), ids)
    feed = RoundFeed(state, ids, basis="global")

    def record(peer: str, r: int) -> RoundMetrics:
        return RoundMetrics(peer, r, float(r), 0.5, 0.6, 0.8, 1.0, 1000 * (r + 1), 900, 2, 2,
                            1, {"replay": 1}, {})  # fmt: skip

    feed(0, [record(p, 0) for p in ids])
    feed(1, [record(p, 1) for p in ids[:2]])  # p2 went down
    snap = state.snapshot()
    rows = {p["peer_id"]: p for p in snap["peers"]}
    assert rows["p0"]["accuracy"] == 0.8  # the global test set, as the summary reports
    assert rows["p2"]["rounds_behind"] == 1
    assert snap["series"]["round"] == [0, 1]
    assert all(e["bytes"] > 0 for e in snap["edges"])
    feed.finish()
    assert {p["state"] for p in state.snapshot()["peers"]} == {"offline"}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="silent_rounds >= 1"):
        make(Clock(), silent_rounds=0)
