"""The batched engine computes what the node engine computes (the node engine is the reference).

Each supported method runs on a small swarm with both engines; every peer's per-round loss,
local and global accuracy and merge statistics (the node's one schema), the swarm-wide rows
and the summary's byte, message and merge counts must agree (accuracies and statistics to
1e-5, losses to 1e-4, consensus distances to 1e-5 relative, counts exactly). Losses get more
room because quantised gossip (choco with int8 values) turns a last-bit difference of the
float64 mix into a rounding flip of one int8 step.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from spargo.node.metrics import RoundMetrics
from spargo.sims import run
from spargo.sims.runner import SimResult
from tests.sims.conftest import small

TOL = 1e-5
LOSS_TOL = 1e-4

CASES: dict[str, dict[str, Any]] = {
    "dense": {"method": "dense"},
    "vc": {"method": "vc"},
    "vc-beta": {"method": "vc", "method_options": {"mix": "beta", "beta": 0.3}},
    "pushsum": {"method": "pushsum"},
    "allreduce": {"method": "allreduce"},
    "allreduce-samples": {"method": "allreduce", "method_options": {"weighting": "samples"}},
    "local": {"method": "local"},
    "choco": {"method": "choco"},
    "choco-randk-int8": {
        "method": "choco",
        "method_options": {"compressor": "randk", "value_dtype": "int8", "ratio": 0.3},
    },
    "choco-float32": {"method": "choco", "method_options": {"value_dtype": "float32"}},
    "choco-gamma": {"method": "choco", "method_options": {"gamma": 0.3, "compressor": "randk"}},
    "fedsparsify": {"method": "fedsparsify"},
    "fedsparsify-layer-head": {
        "method": "fedsparsify",
        "method_options": {"scope": "layer", "include_head": True, "t0": 0, "s_final": 0.9},
    },
    "spafl": {"method": "spafl", "method_options": {"weights_every": 2, "alpha": 2.0}},
    "spafl-thresholds-only": {"method": "spafl", "method_options": {"alpha": 5.0}},
    "spafl-warmup": {"method": "spafl", "method_options": {"alpha": 3.0, "warmup": 3}},
    "spafl-mask-head": {
        "method": "spafl",
        "method_options": {"mask_head": True, "weights_every": 2, "alpha": 2.0},
    },
    "spafl-no-vc": {
        "method": "spafl",
        "method_options": {"weights_every": 3, "vc": False, "min_density": 0.3},
    },
}

#: A harder swarm: label skew, distinct inits, a random sampler on a small-world graph.
HARD: dict[str, Any] = {
    "nodes": 16,
    "topology": "smallworld",
    "task": "digits",
    "partition": "dirichlet:0.5",
    "distinct_init": True,
    "sampler": "random:2",
    "rounds": 4,
    "local_steps": 3,
    "lr": 0.1,
}


def same_records(node: SimResult, batched: SimResult) -> list[tuple[RoundMetrics, RoundMetrics]]:
    """Per peer and round: loss, accuracies, density and merge statistics agree; returns the
    (node, batched) record pairs for a caller's further checks."""
    reference = {(m.peer_id, m.round): m for m in node.rounds}
    assert len(reference) == len(batched.rounds)
    pairs = []
    for m in batched.rounds:
        ref = reference[(m.peer_id, m.round)]
        for key, tol in (("loss", LOSS_TOL), ("accuracy", TOL), ("global_accuracy", TOL)):
            a, b = getattr(ref, key), getattr(m, key)
            assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol, (m.peer_id, key)
        assert m.density == ref.density
        assert m.merge.keys() == ref.merge.keys(), (m.peer_id, m.round)
        for key, value in m.merge.items():
            assert value == pytest.approx(ref.merge[key], rel=TOL, abs=TOL), (m.peer_id, key)
        pairs.append((ref, m))
    return pairs


def assert_same(node: SimResult, batched: SimResult) -> None:
    """Per peer and round, and swarm-wide: the two runs agree."""
    for ref, m in same_records(node, batched):
        assert m.bytes_sent == ref.bytes_sent, (m.peer_id, m.round)
    for ref_row, row in zip(node.round_stats, batched.round_stats, strict=True):
        assert row.keys() >= ref_row.keys(), row["round"]
        for key in ("accuracy_mean", "accuracy_min", "local_accuracy_mean", "density"):
            a, b = ref_row[key], row[key]
            assert (a is None and b is None) or abs(a - b) <= TOL, (row["round"], key)
        assert row["consensus_distance"] == pytest.approx(ref_row["consensus_distance"], TOL)
        assert row["bytes_sent_total"] == ref_row["bytes_sent_total"], row["round"]
    assert set(node.summary) <= set(batched.summary)  # the same summary, plus its own keys
    for key in ("bytes_sent_total", "messages_sent", "merges", "messages_dropped", "rounds_done"):
        assert batched.summary[key] == node.summary[key], key
    for key in ("accuracy_mean", "local_accuracy_mean", "averaged_model_accuracy", "density"):
        assert abs(batched.summary[key] - node.summary[key]) <= TOL, key


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_equals_node_on_a_ring(case: str) -> None:
    fields = {"rounds": 4, **CASES[case]}
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert batched.summary["engine"] == "batched"
    assert_same(node, batched)


@pytest.mark.parametrize(
    "case",
    ["dense", "vc", "pushsum", "choco", "fedsparsify", "spafl", "allreduce-samples", "local"],
)
def test_batched_equals_node_on_a_skewed_small_world(case: str) -> None:
    fields = {**HARD, **CASES[case]}
    if case == "choco":  # choco's batched form needs every link every round
        fields["sampler"] = "all"
    node = run(small(**fields))
    batched = run(small(engine="batched", **fields))
    assert_same(node, batched)
    # The swarm really learns something different per peer (not a trivial agreement).
    accuracies = {m.global_accuracy for m in batched.rounds if m.round == 3}
    assert len(accuracies) == 1 if case == "allreduce-samples" else len(accuracies) > 1
    if case == "pushsum":  # masses ≠ 1, so the step on the numerator x = z·w is exercised
        assert any(abs(m.merge["pushsum_mass"] - 1.0) > 0.1 for m in batched.rounds)
    if case in ("fedsparsify", "spafl"):  # and it really prunes
        assert batched.summary["density"] < 0.9


def test_batched_equals_node_with_sparse_evaluation_and_exponential_sampler() -> None:
    fields: dict[str, Any] = {
        "method": "dense",
        "topology": "exponential",
        "sampler": "exponential",
        "rounds": 5,
        "eval_every": 2,
    }
    assert_same(run(small(**fields)), run(small(engine="batched", **fields)))
