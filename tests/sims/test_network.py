"""The link model: delays from latency, jitter and bandwidth; loss; per-edge overrides; cuts."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from spargo.sims.data import DIRICHLET_MIN_SHARD, partition_indices
from spargo.sims.network import SERVER_ID, Link, LinkModel, churn_plan, edge_links, step_times
from spargo.sims.scenario import Scenario


def test_delay_is_latency_plus_serialisation() -> None:
    model = LinkModel(Link(latency_s=0.05, bandwidth_bps=8e6), {}, seed=0)
    assert model("a", "b", 1_000_000) == pytest.approx(0.05 + 1.0)


def test_jitter_stays_in_range_and_loss_rate_is_right() -> None:
    model = LinkModel(Link(latency_s=0.01, jitter_s=0.02, loss=0.3), {}, seed=1)
    delays = [model("a", "b", 10) for _ in range(4000)]
    kept = [d for d in delays if d is not None]
    assert all(0.01 <= d <= 0.03 for d in kept)
    assert abs(1 - len(kept) / len(delays) - 0.3) < 0.03
    assert model.drops["loss"] == len(delays) - len(kept)
    assert model(SERVER_ID, "b", 10) == 0.0  # the all-reduce hub's links are ideal


def test_graph_edge_attributes_override_the_defaults() -> None:
    g = nx.path_graph(3)
    g.edges[0, 1]["latency_ms"] = 100.0
    links = edge_links(g, {"p0": 0, "p1": 1, "p2": 2}, Link(latency_s=0.001))
    assert links[("p0", "p1")].latency_s == pytest.approx(0.1)
    assert links[("p1", "p0")].latency_s == pytest.approx(0.1)
    assert ("p1", "p2") not in links


def test_the_partition_cuts_only_between_sides_and_only_while_split() -> None:
    now = {"round": 0}
    model = LinkModel(
        Link(), {}, 0, groups={"a": 0, "b": 1, "c": 0}, partition_at=(2, 4),
        round_of=lambda _p: now["round"],
    )  # fmt: skip
    assert model("a", "b", 1) == 0.0
    now["round"] = 2
    assert model("a", "b", 1) is None
    assert model("a", "c", 1) == 0.0
    now["round"] = 4
    assert model("a", "b", 1) == 0.0


def test_churn_plan_and_speeds_are_seeded() -> None:
    s = Scenario(nodes=10, rounds=20, churn=0.2, step_time_s=0.1, speed_spread=0.5)
    assert churn_plan(s) == churn_plan(s)
    assert churn_plan(s)
    assert all(1 <= e.round < 20 and e.action in ("leave", "fail") for e in churn_plan(s))
    assert step_times(s) == step_times(s)
    assert len(set(step_times(s))) == 10


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "shards:4"])
def test_too_many_peers_for_the_data_is_an_error_not_empty_shards(spec: str) -> None:
    labels = np.arange(30) % 3
    with pytest.raises(ValueError, match="fewer peers"):
        partition_indices(labels, 16, spec, seed=0)


@pytest.mark.parametrize("n_peers", [2, 5, 7])
def test_dirichlet_tops_every_peer_up_to_its_minimum(n_peers: int) -> None:
    # 28 samples, heavily skewed: the top-up must not drain a donor below the minimum.
    labels = np.arange(28) % 7
    for seed in range(20):
        parts = partition_indices(labels, n_peers, "dirichlet:0.05", seed)
        assert min(len(p) for p in parts) >= DIRICHLET_MIN_SHARD
        assert sorted(np.concatenate(parts).tolist()) == list(range(28))
