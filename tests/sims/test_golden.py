"""Golden runs: refactors must not change what the simulator computes (issue 12).

Each case is a seeded scenario whose per-peer, per-round accuracy, loss, density and merge
count were recorded before the architecture change; a run today must reproduce them to 1e-6.
Byte counts are recorded too but compared only when ``SPARGO_GOLDEN_BYTES=1``: they may change
where the wire format changes (the closing note of that change says by how much).

Re-record (only for a change that is meant to alter results, and say why in the commit):
``python -m tests.sims.test_golden [CASE ...]`` (no case: all of them).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).with_name("golden")
BASE: dict[str, Any] = {"nodes": 8, "topology": "ring", "rounds": 20, "seed": 0}

#: name -> scenario fields (over ``BASE``; the default run uses none of them).
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    **{
        m: {**BASE, "method": m}
        for m in ("dense", "vc", "spafl", "fedsparsify", "choco", "allreduce")
    },
    # Recorded as dense with mix=pushsum / mix=pushsum_rs; push-sum is a method of its own now.
    "pushsum": {**BASE, "method": "pushsum"},
    "pushsum_rs": {**BASE, "method": "pushsum_rs"},
    "faults": {
        **BASE,
        "method": "pushsum",
        "topology": "smallworld",
        "loss": 0.1,
        "churn": 0.05,
        "partition_at": (5, 9),
        "attack": "signflip",
        "attackers": 0.125,
    },
}


def _record(fields: dict[str, Any]) -> dict[str, Any]:
    from spargo.sims import Scenario, run

    result = run(Scenario(**fields))
    keep = ("accuracy_mean", "global_accuracy_mean", "density", "merges", "bytes_sent_total")
    return {
        "summary": {k: result.summary.get(k) for k in keep},
        "rounds": [
            {
                "peer_id": m.peer_id,
                "round": m.round,
                "accuracy": m.accuracy,
                "global_accuracy": m.global_accuracy,
                "loss": m.loss,
                "density": m.density,
                "merged_peers": m.merge.get("merged_peers"),
                "bytes_sent": m.bytes_sent,
            }
            for m in sorted(result.rounds, key=lambda m: (m.round, m.peer_id))
        ],
    }


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6
    return bool(a == b)


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_matches_its_golden_record(name: str) -> None:
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    got = _record(CASES[name])
    check_bytes = os.environ.get("SPARGO_GOLDEN_BYTES") == "1"
    for key, value in want["summary"].items():
        if key == "bytes_sent_total" and not check_bytes:
            continue
        assert _close(got["summary"][key], value), (name, key, got["summary"][key], value)
    assert len(got["rounds"]) == len(want["rounds"])
    for g, w in zip(got["rounds"], want["rounds"], strict=True):
        for key, value in w.items():
            if key == "bytes_sent" and not check_bytes:
                continue
            assert _close(g[key], value), (name, w["peer_id"], w["round"], key, g[key], value)


if __name__ == "__main__":
    import sys

    import torch

    torch.set_num_threads(1)
    GOLDEN.mkdir(exist_ok=True)
    chosen = sys.argv[1:] or list(CASES)
    for case in chosen:
        scenario = CASES[case]
        (GOLDEN / f"{case}.json").write_text(json.dumps(_record(scenario), indent=0) + "\n")
        print("recorded", case)
