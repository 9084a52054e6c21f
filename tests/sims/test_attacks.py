"""Misbehaving peers: tampering transforms, and honest peers counting what they drop."""

from __future__ import annotations

import numpy as np
import pytest

from spargo.protocol import FullModel, NamedTensor
from spargo.sims.attacks import parse_attack, pick_attackers, tamper, transform_for
from spargo.sims.runner import run
from tests.sims.conftest import small


def test_tamper_touches_float_arrays_only() -> None:
    body = FullModel(tensors=(NamedTensor("w", np.array([1.0, -2.0], dtype=np.float32)),))
    flip = transform_for("signflip", 0)
    assert flip is not None
    flipped = tamper(body, flip)
    np.testing.assert_array_equal(flipped.tensors[0].array, [-1.0, 2.0])
    np.testing.assert_array_equal(body.tensors[0].array, [1.0, -2.0])  # original untouched
    scale = transform_for("scale:10", 0)
    assert scale is not None
    np.testing.assert_array_equal(tamper(body, scale).tensors[0].array, [10.0, -20.0])
    assert transform_for("replay", 0) is None


@pytest.mark.parametrize("spec", ["scale", "scale:x", "bogus", "nan:3"])
def test_bad_attack_specs_say_what_to_use(spec: str) -> None:
    with pytest.raises(ValueError, match=r"scale:K|factor"):
        parse_attack(spec)


def test_attackers_are_a_seeded_fraction() -> None:
    assert pick_attackers(8, 0.25, 0) == pick_attackers(8, 0.25, 0)
    assert len(pick_attackers(8, 0.25, 0)) == 2
    assert pick_attackers(8, 0.0, 0) == []


def test_nan_updates_are_dropped_and_counted() -> None:
    result = run(small(attack="nan", attackers=0.25, rounds=4))
    assert result.summary["attackers"] == 2
    assert result.summary["drops"]["nonfinite"] > 0
    assert result.summary["accuracy_mean"] is not None
    assert np.isfinite(result.summary["accuracy_mean"])


def test_replays_are_dropped_and_counted() -> None:
    result = run(small(attack="replay", attackers=0.25, rounds=4))
    assert result.summary["drops"]["replay"] > 0


def test_sign_flipping_peers_pull_the_swarm_apart() -> None:
    clean = run(small(rounds=6))
    attacked = run(small(attack="signflip", attackers=0.25, rounds=6))
    assert attacked.summary["consensus_distance"] > clean.summary["consensus_distance"]


def test_equivocating_peers_pull_the_swarm_apart() -> None:
    clean = run(small(rounds=6))
    attacked = run(small(attack="equivocate", attackers=0.25, rounds=6))
    assert attacked.summary["attackers"] == 2
    assert attacked.summary["consensus_distance"] > clean.summary["consensus_distance"]
