"""Misbehaving peers' building blocks: attack specs, the choice of attackers, array tampering.

The attacks themselves are fault objects (``sims.faults``: ``Tamper``, ``Equivocate``,
``Replay``). Tampering transforms every float array in the payloads a peer sends, whatever
the message type (full models, masked updates, thresholds…); equivocation sends each target
its own tampered copy; replays re-send old encoded frames (``sims.network.ReplayTransport``).
Honest peers must drop NaN updates in protocol validation (counted as ``nonfinite``) and
replays in the replay window (counted as ``replay``); scaled, flipped, random and
equivocating updates are what robust merging (docs/algorithms.md §6) has to absorb.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

#: How many sends back a replaying peer reaches for the frame it re-sends.
REPLAY_LAG = 2

Transform = Callable[[np.ndarray], np.ndarray]


def parse_attack(spec: str) -> tuple[str, float]:
    """``scale:K`` → ("scale", K); ``signflip``/``random``/``nan``/``replay``/``equivocate``
    → (name, 0). A ``ValueError`` names the valid specs otherwise."""
    name, _, arg = spec.partition(":")
    if name == "scale":
        try:
            return name, float(arg)
        except ValueError:
            pass
        raise ValueError(f"--attack {spec!r} needs a factor, e.g. scale:10")
    if name in ("signflip", "random", "nan", "replay", "equivocate") and not arg:
        return name, 0.0
    raise ValueError(
        f"--attack {spec!r} is unknown; use scale:K, signflip, random, nan, replay or equivocate"
    )


def pick_attackers(n_peers: int, fraction: float, seed: int) -> list[int]:
    """Which peer numbers misbehave: round(fraction·n) of them, at least one, seeded."""
    if fraction <= 0:
        return []
    count = max(1, round(fraction * n_peers))
    rng = np.random.default_rng([seed, 401])
    return sorted(int(p) for p in rng.choice(n_peers, size=count, replace=False))


def transform_for(spec: str, seed: int) -> Transform | None:
    """The array transformation of a tampering attack (``None`` for replay and equivocate,
    which are not one transformation for every target)."""
    name, factor = parse_attack(spec)
    rng = np.random.default_rng([seed, 409])
    if name == "scale":
        return lambda a: a * np.float32(factor)
    if name == "signflip":
        return lambda a: -a
    if name == "nan":
        return lambda a: np.full_like(a, np.nan)
    if name == "random":
        return lambda a: rng.normal(0.0, float(a.std()) or 1.0, size=a.shape).astype(a.dtype)
    return None


def tamper(body: Any, transform: Transform) -> Any:
    """A copy of a message body with every float array transformed (recursing into tuples)."""
    if isinstance(body, np.ndarray):
        return transform(body) if body.dtype.kind == "f" else body
    if isinstance(body, tuple):
        return tuple(tamper(item, transform) for item in body)
    if isinstance(body, Mapping):
        return {key: tamper(item, transform) for key, item in body.items()}
    if dataclasses.is_dataclass(body) and not isinstance(body, type):
        changes = {
            f.name: tamper(getattr(body, f.name), transform)
            for f in dataclasses.fields(body)
            if isinstance(getattr(body, f.name), np.ndarray | tuple | Mapping)
        }
        return dataclasses.replace(body, **changes) if changes else body
    return body
