"""Faults as masks: the batched engine under message loss, partitions and device speeds computes
what the node engine computes (the node engine is the reference).

Every batched method runs 30% loss on a ring with both engines: per peer and round the losses,
accuracies, merge statistics and simulated times agree (1e-5), and the summary's byte, message,
merge and drop counts (by reason: ``network_loss``, ``stale``, …) are equal. The loss draw is a
pure function of (seed, stream, sender, receiver, round, message index), so both engines draw
the same mask whatever order the event loop routes messages in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
import torch

from spargo.sims import run
from spargo.sims.batched_faults import EPS_S, FaultPlan
from spargo.sims.batched_faults_links import Links
from spargo.sims.batched_mix import Edges
from spargo.sims.network import keyed_uniform
from spargo.sims.runner import SimResult
from spargo.sims.scenario import ChurnEvent
from tests.sims.conftest import small
from tests.sims.test_batched_equal import CASES, HARD, TOL, same_records

#: Every batched method under loss (choco: lost deltas, resync asks and copies on the wire).
LOSSY = [
    "dense", "vc", "vc-beta", "pushsum", "choco", "choco-randk-int8", "fedsparsify", "spafl",
    "local", "allreduce",
]  # fmt: skip


def assert_same_faults(node: SimResult, batched: SimResult) -> None:
    """Per peer and round: loss, accuracies, density, merge statistics and simulated time;
    per round: the swarm-wide row; the summary's counts and drops by reason, exactly. As
    ``test_batched_equal.assert_same``, but a consensus distance may also differ by one unit
    of the rows' sixth decimal (float32 training differs in the last bits, and rounding to
    six decimals can turn that into 1e-6 on a value below 0.1)."""
    for ref, m in same_records(node, batched):
        assert abs(m.time_s - ref.time_s) <= TOL, (m.peer_id, m.round)
    for ref_row, row in zip(node.round_stats, batched.round_stats, strict=True):
        for key in ("accuracy_mean", "accuracy_min", "local_accuracy_mean", "density"):
            a, b = ref_row[key], row[key]
            assert (a is None and b is None) or abs(a - b) <= TOL, (row["round"], key)
        distance = pytest.approx(ref_row["consensus_distance"], rel=TOL, abs=1.5e-6)
        assert row["consensus_distance"] == distance
    for key in ("bytes_sent_total", "messages_sent", "merges", "rounds_done", "drops"):
        assert batched.summary[key] == node.summary[key], key
    for key in ("messages_dropped", "simulated_s"):
        assert batched.summary[key] == node.summary[key], key
    for key in ("accuracy_mean", "local_accuracy_mean", "averaged_model_accuracy", "density"):
        assert abs(batched.summary[key] - node.summary[key]) <= TOL, key
    assert batched.faults["network_drops"] == node.faults["network_drops"]


@pytest.mark.parametrize("case", LOSSY)
def test_thirty_percent_loss_is_the_same_in_both_engines(case: str) -> None:
    fields = {"rounds": 5, "loss": 0.3, **CASES[case]}
    if case == "spafl":
        fields["method_options"] = {"weights_every": 2, "alpha": 2.0}  # τ and weights
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    if case not in ("allreduce",):  # the hub's links are ideal: nothing to lose there
        assert batched.summary["drops"]["network_loss"] > 0
    if case.startswith("choco"):  # gaps were found and resyncs asked for and taken
        assert sum(m.merge["gaps"] for m in batched.rounds) > 0
        assert sum(m.merge["resyncs"] for m in batched.rounds if m.round > 0) > 0


def test_loss_on_a_skewed_small_world_with_a_random_sampler() -> None:
    fields: dict[str, Any] = {**HARD, "method": "pushsum", "loss": 0.3}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.summary["drops"].get("stale", 0) > 0  # late messages really happen


@pytest.mark.parametrize("method", ["vc", "choco"])
def test_a_partition_with_loss_is_the_same_in_both_engines(method: str) -> None:
    fields: dict[str, Any] = {"method": method, "rounds": 6, "loss": 0.1, "partition_at": (2, 4)}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.faults["network_drops"]["partition"] > 0


@pytest.mark.parametrize("method", ["dense", "allreduce"])
def test_device_speeds_give_the_same_simulated_times(method: str) -> None:
    fields: dict[str, Any] = {
        "method": method,
        "rounds": 5,
        "loss": 0.2 if method == "dense" else 0.0,
        "step_time_s": 0.5,
        "speed_spread": 0.5,
        "round_deadline_s": 3.0,
    }
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.summary["simulated_s"] > 5 * 5 * 0.5 * 0.5  # compute time is on the clock
    assert batched.faults["step_time_s"] == node.faults["step_time_s"]


def test_the_same_seed_gives_the_same_lossy_run() -> None:
    fields: dict[str, Any] = {"engine": "batched", "rounds": 4, "loss": 0.3, "method": "vc"}
    first, again = run(small(**fields)), run(small(**fields))
    assert [m.to_dict() for m in first.rounds] == [m.to_dict() for m in again.rounds]
    assert first.summary["drops"] == again.summary["drops"]
    other = run(small(**fields, seed=1))
    assert other.summary["drops"] != first.summary["drops"]


def test_keyed_draws_are_a_pure_function_of_their_key() -> None:
    sender = np.array([0, 1, 2, 3, 0])
    receiver = np.array([1, 2, 3, 0, 1])
    draws = keyed_uniform(7, 101, sender, receiver, 4, np.array([0, 0, 0, 0, 1]))
    alone = [keyed_uniform(7, 101, int(s), int(r), 4, i)[0]
             for s, r, i in zip(sender, receiver, [0, 0, 0, 0, 1], strict=True)]  # fmt: skip
    assert draws.tolist() == alone  # one at a time, or a whole round at once
    assert draws[0] != draws[4]  # the message index is part of the key
    assert keyed_uniform(8, 101, 0, 1, 4, 0)[0] != draws[0]  # and the seed
    many = keyed_uniform(0, 101, np.arange(100_000), 0, 0, 0)
    assert many.min() >= 0.0
    assert many.max() < 1.0
    assert abs(many.mean() - 0.5) < 0.005
    assert abs((many < 0.3).mean() - 0.3) < 0.005


def test_the_plan_on_a_line_of_three_by_hand() -> None:
    """0 — 1 — 2, one round, a cut between 1 and 2, compute 1 s, 2 s, 1 s, deadline 10 s:
    0 gets 1's message at 2 s and finishes; 2 waits out its deadline (11 s) and says Bye,
    which ends 1's wait for 2 at 11 s (before 1's own deadline, 12 s). 1's Bye to 0 lands
    after 0 left (unreachable); its Bye to 2 lands in the instant 2 left (lost with it)."""
    edges = Edges(np.array([0, 1, 1, 2]), np.array([1, 0, 2, 1]), 3)
    links = Links(seed=0, loss=0.0, sides=np.array([0, 0, 1]), split=0, heal=1)
    plan = FaultPlan(
        [edges], lambda _r: 1, [[1], [0, 2], [1]], links, np.array([1.0, 2.0, 1.0]), 10.0
    )
    (round0,) = plan.rounds
    assert round0.time_s.tolist() == [2.0, 11.0, 11.0]
    merged = round0.merged[0]
    assert list(zip(merged.receiver.tolist(), merged.sender.tolist(), strict=True)) == [
        (0, 1),
        (1, 0),
    ]
    assert round0.sent.receiver.tolist() == [0, 1, 1, 2]  # a cut message is still sent
    assert plan.drops["network_partition"] == 2  # 2 → 1 and 1 → 2
    assert plan.drops["network_unreachable"] == 1
    assert plan.drops["stale"] == 0
    assert EPS_S < 1e-6


def test_churn_follows_the_batched_semantics_of_a_numpy_reference() -> None:
    """Consensus only (lr 0) on a ring of 6: peer 1 leaves for rounds 2–3, peer 3 fails for
    good at round 1, peer 4 fails for round 3. Every round, each present peer mixes with its
    present neighbours by Metropolis–Hastings (1/3 each on a ring, the rest to itself) and an
    absent peer keeps its state; messages and drops are counted by hand."""
    from spargo.sims.batched import BatchedSwarm

    events = (
        ChurnEvent(1, 2, "leave", 2),
        ChurnEvent(3, 1, "fail", 0),
        ChurnEvent(4, 3, "fail", 1),
    )
    scenario = small(
        nodes=6, rounds=6, lr=0.0, distinct_init=True, churn_events=events, engine="batched"
    )
    down = {0: set(), 1: {3}, 2: {1, 3}, 3: {1, 3, 4}, 4: {3}, 5: {3}}
    with torch.no_grad():
        swarm = BatchedSwarm(scenario)
    x = swarm.flat().detach().double().numpy()
    for r in range(6):
        swarm.step(r)
        mixed = x.copy()
        for i in set(range(6)) - down[r]:
            heard = [j for j in ((i - 1) % 6, (i + 1) % 6) if j not in down[r]]
            mixed[i] = (1 - len(heard) / 3) * x[i] + sum(x[j] for j in heard) / 3
        x = mixed
        assert np.allclose(swarm.flat().detach().double().numpy(), x, atol=1e-6), r
    swarm.finish()
    sends = sum(2 * (6 - len(down[r])) for r in range(6)) - 2 * 2  # nobody sends to 1 away
    hellos, byes = 12 + 2 + 2, 2 + 2 * 5  # rejoins greet; 1 leaves; the 5 left at the end
    assert int(swarm.wire.messages_sent.sum()) == sends + hellos + byes
    # A failed peer is still sent to: 2 and 4 → 3 in rounds 1–5 (not 4 in round 3), 5 → 4.
    assert swarm.extra_drops["network_unreachable"] == 9 + 1
    result = run(scenario)
    assert result.summary["churn_events"] == 3
    assert result.faults["rejoins"] == {"p1": 1, "p4": 1}
    assert [row["peers"] for row in result.round_stats] == [6 - len(down[r]) for r in range(6)]
    assert {m.peer_id for m in result.rounds if m.round == 3} == {"p0", "p2", "p5"}


def test_seeded_churn_replays_and_every_method_runs_it() -> None:
    fields: dict[str, Any] = {"engine": "batched", "rounds": 5, "churn": 0.2, "churn_downtime": 1}
    first, again = run(small(**fields)), run(small(**fields))
    assert [m.to_dict() for m in first.rounds] == [m.to_dict() for m in again.rounds]
    assert first.summary["churn_events"] > 0
    for method in ("vc", "pushsum", "fedsparsify", "spafl", "local", "allreduce"):
        result = run(small(**fields, method=method))
        assert result.summary["churn_events"] == first.summary["churn_events"]
        assert len(result.rounds) < 8 * 5  # absent peers record nothing


def test_a_graph_files_per_edge_loss_is_the_same_in_both_engines(tmp_path: Path) -> None:
    ring = nx.cycle_graph(8)
    for u, v in ring.edges:  # every other link loses half its messages, the rest none
        ring.edges[u, v]["loss"] = 0.5 if u % 2 == 0 else 0.0
    path = tmp_path / "ring.graphml"
    nx.write_graphml(ring, path)
    fields: dict[str, Any] = {"topology": str(path), "rounds": 5}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.summary["drops"]["network_loss"] > 0


#: The K-GT and running-sums methods under faults (``cgt``/``cgt_masked``: below).
TRACKED = ["tracking", "pushsum_rs"]


@pytest.mark.parametrize("method", TRACKED)
def test_tracked_methods_under_thirty_percent_loss_on_the_ring(method: str) -> None:
    fields: dict[str, Any] = {"method": method, "rounds": 5, "loss": 0.3}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.summary["drops"]["network_loss"] > 0
    merged = [m.merge["merged_peers"] for m in batched.rounds]
    assert 0 < sum(merged) < 2 * len(merged)  # some neighbours' messages were missing


@pytest.mark.parametrize("method", TRACKED)
def test_tracked_methods_with_a_random_sampler_and_late_messages(method: str) -> None:
    fields: dict[str, Any] = {**HARD, "method": method, "loss": 0.3}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.summary["drops"].get("network_unreachable", 0) > 0


@pytest.mark.parametrize("method", TRACKED)
def test_tracked_methods_under_a_partition_with_loss(method: str) -> None:
    fields: dict[str, Any] = {"method": method, "rounds": 6, "loss": 0.1, "partition_at": (2, 4)}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.faults["network_drops"]["partition"] > 0


@pytest.mark.parametrize("method", [*TRACKED, "cgt"])
def test_tracked_methods_under_device_speeds(method: str) -> None:
    fields: dict[str, Any] = {
        "method": method,
        "rounds": 5,
        "loss": 0.2,
        "step_time_s": 0.5,
        "speed_spread": 0.5,
        "round_deadline_s": 3.0,
    }
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.summary["drops"].get("stale", 0) > 0  # slow peers' messages came late
    assert batched.faults["step_time_s"] == node.faults["step_time_s"]


#: ``cgt`` and ``cgt_masked`` under loss: (name, method, options); the default compressor
#: is energy top-k (a k per peer and message), rand-k draws positions by the stream's seed.
CGT_CASES = [
    ("cgt", "cgt", {}),
    ("cgt-randk", "cgt", {"compressor": "randk"}),
    ("cgt_masked", "cgt_masked", {}),
    ("cgt_masked-t0", "cgt_masked", {"t0": 0}),
]


@pytest.mark.parametrize(("method", "options"), [c[1:] for c in CGT_CASES],
                         ids=[c[0] for c in CGT_CASES])  # fmt: skip
def test_cgt_under_thirty_percent_loss_on_the_ring(method: str, options: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"method": method, "rounds": 5, "loss": 0.3}
    fields["method_options"] = options
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.summary["drops"]["network_loss"] > 0
    merges = [m.merge for m in batched.rounds]
    assert sum(m["gaps"] for m in merges) > 0  # lost deltas were found…
    assert sum(m["resyncs"] for m in merges) > 0  # …and resynced with a full copy


@pytest.mark.parametrize("method", ["cgt", "cgt_masked"])
def test_cgt_under_a_partition_with_loss(method: str) -> None:
    fields: dict[str, Any] = {"method": method, "rounds": 6, "loss": 0.1, "partition_at": (2, 4)}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.faults["network_drops"]["partition"] > 0
    assert sum(m.merge["resyncs"] for m in batched.rounds) > 0


def test_cgt_under_a_graph_files_edge_loss(tmp_path: Path) -> None:
    ring = nx.cycle_graph(8)
    for u, v in ring.edges:
        ring.edges[u, v]["loss"] = 0.5
    path = tmp_path / "ring.graphml"
    nx.write_graphml(ring, path)
    fields: dict[str, Any] = {"method": "cgt", "topology": str(path), "rounds": 4}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same_faults(node, batched)
    assert batched.summary["drops"]["network_loss"] > 0
