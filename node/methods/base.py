"""The method seam: what a peer sends each round and how it merges what it receives.

A method is a strategy object over pure aggregation functions (``node.aggregation``) and
plain typed payloads (``node.methods.payloads``); it never sees a wire type. The node calls,
per round: ``begin_round`` → training (with ``loss_term`` / ``after_step``) → Q gossip steps
(node option ``gossip_steps``, 1 by default), each ``begin_step`` → ``outgoing`` → (payloads
arrive, decoded and checked against ``signature()`` once by the node) → ``merge``, which
returns a ``MergeResult`` (stats of one schema and any replies). Work that belongs to the
round, not to one exchange, keys on ``first_gossip_step`` / ``last_gossip_step``
(docs/algorithms.md §4.10); async mode never calls ``begin_step`` (one step, both true). A
control payload (a CHOCO resync ask) reaches ``merge`` alone, on arrival. ``merge`` runs
inside the node's bad-data guard. ``state_dict`` is what a checkpoint keeps beyond the model
itself (masks, public copies, push-sum mass). Methods are listed in
``node.methods.registry``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from spargo.node.aggregation import staleness_weights
from spargo.node.methods.payloads import MergeResult, Payload, Received, Signature
from spargo.node.methods.registry import method_spec
from spargo.node.params import exchangeable_parameters


@dataclass
class MethodContext:
    """What a method may use: the model and this peer's place in the graph."""

    model: nn.Module
    peer_id: str
    #: Mixing weights of this peer's row (self included), e.g. Metropolis–Hastings.
    weights: Mapping[str, float]
    seed: int = 0
    #: Total rounds planned (schedules use it); 0 when open-ended.
    rounds: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


def mixing_row(
    weights: Mapping[str, float], self_id: str, present: Sequence[str]
) -> dict[str, float]:
    """The weights actually used this round: a missing neighbour's weight goes to self.

    Keeps the row stochastic, so a lost message biases nothing towards zero.
    """
    row = {peer: weights.get(peer, 0.0) for peer in present if peer != self_id}
    row[self_id] = max(0.0, 1.0 - sum(row.values()))
    return row


def stale_row(
    weights: Mapping[str, float],
    self_id: str,
    staleness: Mapping[str, int],
    gamma: float,
) -> dict[str, float]:
    """``mixing_row`` with each neighbour's weight scaled by 1/(1 + s)^γ (s = rounds late).

    The weight a late message loses goes to self, so the row stays stochastic.
    """
    row = mixing_row(weights, self_id, list(staleness))
    for peer, late in staleness.items():
        if peer != self_id:  # a message from "the future" (another clock) is fresh, not > 1
            row[peer] *= float(staleness_weights(np.array([max(0, late)]), gamma)[0])
    row[self_id] = max(0.0, 1.0 - sum(w for p, w in row.items() if p != self_id))
    return row


def parse_options(
    method: str, options: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` overridden by ``options``, each coerced to its default's type.

    An unknown key or a value of the wrong kind raises ValueError naming the valid keys.
    """
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in sorted(defaults.items()))
        raise ValueError(
            f"method {method!r} has no option {', '.join(map(repr, unknown))}; valid: "
            f"{valid or 'none'}"
        )
    out = dict(defaults)
    for key, value in options.items():
        out[key] = _coerce(method, key, value, defaults[key])
    return out


def _coerce(method: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"method {method!r} option {key}={value!r} must be a {kind.__name__} "
            f"(e.g. {key}={default!r})"
        ) from None


class Method:
    """Base class with no-op hooks; subclasses override what they need."""

    #: The registry name (``node.methods.registry``), which also holds the option defaults.
    name: ClassVar[str] = "base"
    #: This round's gossip step (0 .. gossip_steps − 1) and the step count (``begin_step``).
    gossip_step: int = 0
    gossip_steps: int = 1

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        defaults = method_spec(self.name).defaults if self.name != "base" else {}
        self.options = parse_options(self.name, ctx.options, defaults)
        self._signature: Signature | None = None

    def exchanged(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters this method sends and merges (all of them unless overridden)."""
        return exchangeable_parameters(self.ctx.model)

    def signature(self) -> Signature:
        """The tensors peers exchange (names, shapes): the node checks every payload against
        it, and its hash travels in Hello."""
        if self._signature is None:
            shapes = {name: tuple(p.shape) for name, p in self.exchanged()}
            self._signature = Signature(shapes)
        return self._signature

    def expected_messages(self, round_index: int) -> int:
        """How many data messages each sender sends per round (the node waits for them)."""
        return 1

    # --- training hooks ---------------------------------------------------------------
    def begin_round(self, round_index: int) -> None:
        """Called before local training of ``round_index``."""

    def begin_step(self, round_index: int, step: int, steps: int) -> None:
        """Called before each gossip step of ``round_index`` (``step`` in 0 .. ``steps`` − 1),
        after training; rounds mode only. Records the step (subclasses that override it call
        this first)."""
        self.gossip_step, self.gossip_steps = step, steps

    @property
    def first_gossip_step(self) -> bool:
        """Whether the current exchange is the round's first (round-start work goes here)."""
        return self.gossip_step == 0

    @property
    def last_gossip_step(self) -> bool:
        """Whether the current exchange is the round's last (round-end work goes here)."""
        return self.gossip_step >= self.gossip_steps - 1

    def loss_term(self) -> torch.Tensor | None:
        """An extra loss added to the task loss at every local step (e.g. a regulariser)."""
        return None

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. to keep pruned weights at zero)."""

    # --- gossip --------------------------------------------------------------------
    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        """Payloads to send this round, as (peer_id, payload) pairs; the node encodes each
        distinct payload object once."""
        return []

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        """Merge the round's payloads (checked, sorted by sender, arrival order within) into
        the model; returns the statistics and any replies."""
        return MergeResult()

    # --- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps beyond the model (plain tensors and values)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def density(self) -> float:
        """Parameter-weighted density of the model this method trains (1.0 when dense)."""
        return 1.0
