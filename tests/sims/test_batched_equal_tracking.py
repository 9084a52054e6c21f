"""The batched engine's gradient tracking and running-sum push-sum equal the node engine's.

``tracking``, ``cgt`` and ``cgt_masked`` (docs/algorithms.md §10) and ``pushsum_rs`` run on a
small ring and on the skewed small world of ``test_batched_equal`` with both engines; every
peer's per-round accuracies, losses and merge statistics, the rows and the summary's byte,
message and merge counts must agree (``assert_same``). Beside them, the parts fault-free runs
do not reach: running sums over lost messages, and the correction's shift when peers ran
different step counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from spargo import sparse
from spargo.sims import run
from spargo.sims.batched_mix import Edges
from spargo.sims.batched_pushsum_rs import RunningSumsSwarm
from spargo.sims.batched_tracking import Tracking
from spargo.sims.batched_tracking_masked import _top
from spargo.sims.scenario import ScenarioError
from tests.sims.conftest import small
from tests.sims.test_batched_equal import HARD, assert_same

CASES: dict[str, dict[str, Any]] = {
    "tracking": {"method": "tracking"},
    "tracking-no-forget": {"method": "tracking", "method_options": {"forget": 0.0}},
    "cgt": {"method": "cgt"},
    "cgt-topk-float16": {
        "method": "cgt",
        "method_options": {"compressor": "topk", "value_dtype": "float16", "ratio": 0.3},
    },
    "cgt-gamma-float32": {
        "method": "cgt",
        "method_options": {"gamma": 0.05, "value_dtype": "float32", "forget": 0.1},
    },
    "cgt_masked": {"method": "cgt_masked", "method_options": {"t0": 0}},
    "cgt_masked-head": {
        "method": "cgt_masked",
        "method_options": {"include_head": True, "s_final": 0.9, "ratio": 0.5},
    },
    "cgt-randk": {"method": "cgt", "method_options": {"compressor": "randk", "ratio": 0.19}},
    "cgt-energy": {"method": "cgt", "method_options": {"compressor": "energy", "gamma": 0.8}},
    "cgt-energy-float16": {
        "method": "cgt",
        "method_options": {"compressor": "energy", "gamma": 0.5, "value_dtype": "float16"},
    },
    "cgt_masked-topk": {
        "method": "cgt_masked",
        "method_options": {"compressor": "topk", "ratio": 0.19, "t0": 0},
    },
    "cgt_masked-energy": {
        "method": "cgt_masked",
        "method_options": {"compressor": "energy", "gamma": 0.7, "t0": 0},
    },
    "pushsum_rs": {"method": "pushsum_rs"},
}
#: The methods whose batched form needs every link every round (one public copy per peer).
ALL_LINKS = ("cgt", "cgt_masked")


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_equals_node_on_a_ring(case: str) -> None:
    fields = {"rounds": 4, **CASES[case]}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert batched.summary["engine"] == "batched"
    assert_same(node, batched)


@pytest.mark.parametrize(
    "case", ["tracking", "cgt", "cgt_masked", "cgt-energy", "cgt_masked-energy", "pushsum_rs"]
)
def test_batched_equals_node_on_a_skewed_small_world(case: str) -> None:
    fields = {**HARD, **CASES[case]}
    if CASES[case]["method"] in ALL_LINKS:
        fields["sampler"] = "all"
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same(node, batched)
    accuracies = {m.global_accuracy for m in batched.rounds if m.round == 3}
    assert len(accuracies) > 1  # the peers really differ
    if case.startswith("cgt_masked"):  # and it really prunes
        assert batched.summary["density"] < 0.9
    if case == "pushsum_rs":  # masses ≠ 1: the step on the numerator is exercised
        assert any(abs(m.merge["pushsum_mass"] - 1.0) > 0.1 for m in batched.rounds)


def test_the_correction_changes_the_run() -> None:
    """K-GT is not dense gossip in disguise: with its correction the skewed swarm's models
    differ from D-PSGD's, and with ``forget`` they differ again."""
    runs = {
        spec: run(small(engine="batched", **{**HARD, "method": method, "method_options": opts}))
        for spec, (method, opts) in {
            "dense": ("dense", {}),
            "tracking": ("tracking", {"forget": 0.0}),
            "forgetful": ("tracking", {"forget": 0.5}),
        }.items()
    }
    distance = {k: r.summary["consensus_distance"] for k, r in runs.items()}
    assert len(set(distance.values())) == 3
    dense_bytes = runs["dense"].summary["bytes_sent_total"]
    assert runs["tracking"].summary["bytes_sent_total"] > 1.9 * dense_bytes  # z and d travel


def test_compressed_methods_refuse_a_sampled_graph() -> None:
    for method in ALL_LINKS:
        with pytest.raises(ScenarioError, match=f"runs {method} with --sampler all only"):
            run(small(engine="batched", method=method, sampler="random:1", rounds=2))


def test_running_sums_carry_a_lost_message_to_the_next_one() -> None:
    """A lost share stays in flight on its link and arrives with the link's next message:
    Σ z·w + in flight is conserved every round, and once the link delivers nothing is left."""
    edges = Edges(np.array([0, 1, 1, 2]), np.array([1, 0, 2, 1]), 3)  # a path 0 – 1 – 2
    swarm = RunningSumsSwarm(3)
    z = torch.tensor([[1.0, 0.0], [2.0, 4.0], [6.0, -2.0]])
    total = (z.double() * torch.as_tensor(swarm.mass).view(-1, 1)).sum(dim=0)
    lost = np.array([True, False, True, True])  # 0 → 1 (edge 1) is lost
    for arrived in (lost, lost, None):
        z, stats = swarm.round(edges, z, arrived)
        held = (z.double() * torch.as_tensor(swarm.mass).view(-1, 1)).sum(dim=0)
        flying = sum((torch.as_tensor(x) for x, _ in swarm.in_flight.values()), torch.zeros(2))
        mass = swarm.mass.sum() + sum(w for _, w in swarm.in_flight.values())
        assert torch.allclose(held + flying, total, atol=1e-5)
        assert mass == pytest.approx(3.0)
    assert not swarm.in_flight
    assert stats[1]["pushsum_shares"] == 2.0


def test_the_shift_follows_each_peers_last_step_count() -> None:
    """z ← z − e/K with K each peer's own last step count; none before its first round."""
    params = [torch.zeros(3, 2)]
    tracking = Tracking({"forget": 0.0}, params)
    tracking.correction[0].copy_(torch.tensor([[6.0, 6.0], [6.0, 6.0], [6.0, 6.0]]))
    tracking.last_steps = np.array([0, 2, 3])
    tracking.shift(params, slice(None))
    assert params[0][:, 0].tolist() == [0.0, -3.0, -2.0]
    part = [params[0][1:].clone()]
    tracking.shift(part, slice(1, 3))  # a chunk of peers 1 and 2
    assert part[0][:, 0].tolist() == [-6.0, -4.0]
    assert tracking.steps.tolist() == [1, 2, 2]


def test_masked_top_k_takes_the_nodes_positions_when_magnitudes_tie() -> None:
    """Rows whose k-th and (k+1)-th magnitudes tie (zeros at pruned entries) get the node's
    own ``sparse.topk`` positions; the others the batched top-k, sorted: always the node's."""
    diff = torch.tensor([[3.0, 0.0, 1.0, 0.0, -1.0], [4.0, -3.0, 2.0, 1.0, 0.5], [0.0] * 5])
    k = np.array([2, 3, 4])
    for row, positions in zip(diff, _top(diff, k), strict=True):
        assert positions.tolist() == sparse.topk(row, len(positions))[0].tolist()
    assert [len(p) for p in _top(diff, k)] == [2, 3, 4]
