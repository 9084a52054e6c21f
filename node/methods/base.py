"""The method seam: what a peer sends each round and how it merges what it receives.

A method is a strategy object over pure aggregation functions (``node.aggregation``). The
node calls, per round: ``begin_round`` → training (with ``loss_term`` / ``after_step``) →
``outgoing`` → (messages arrive) → ``merge``. Control traffic a method asks for (a CHOCO
resync, say) goes through ``on_control``. ``state_dict`` is what a checkpoint keeps beyond
the model itself (masks, error-feedback residuals, public copies, push-sum weight).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from spargo.node.aggregation import staleness_weights
from spargo.node.params import signature_items
from spargo.protocol import (
    Envelope,
    MaskedTensor,
    Message,
    NamedTensor,
    UnitMaskedTensor,
    model_signature,
)

M = TypeVar("M")


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


def finite_arrays(arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether every array holds only finite numbers (NaN/Inf from a peer is rejected)."""
    return all(bool(np.isfinite(a).all()) for a in arrays.values())


def latest_of(
    received: Mapping[str, Sequence[Envelope]], kind: type[M]
) -> dict[str, tuple[Envelope, M]]:
    """Per sender, the last received envelope whose body is a ``kind`` (in sender order)."""
    out: dict[str, tuple[Envelope, M]] = {}
    for sender in sorted(received):
        for envelope in received[sender]:
            if isinstance(envelope.body, kind):
                out[sender] = (envelope, envelope.body)
    return out


def matching_tensors(
    tensors: Sequence[NamedTensor], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray] | None:
    """The dense tensors keyed by name, or ``None`` when any name or shape does not fit ours."""
    out = {t.name: t.array for t in tensors}
    if set(out) != set(shapes):
        return None
    for name, array in out.items():
        if tuple(array.shape) != shapes[name]:
            return None
    return out


def masked_arrays(
    tensors: Sequence[MaskedTensor | UnitMaskedTensor | NamedTensor],
    shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """name → (dense values, bool mask) of a MaskedUpdate, or ``None`` when it does not fit.

    A NamedTensor holds every coordinate; a UnitMaskedTensor holds whole rows. Names, shapes
    and finiteness of the held values must all match ours, else the update is rejected.
    """
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for t in tensors:
        shape = shapes.get(t.name)
        if shape is None:
            return None
        if isinstance(t, NamedTensor):
            values, mask = t.array, np.ones(t.array.shape, dtype=bool)
            if tuple(values.shape) != shape:
                return None
        else:
            if tuple(t.shape) != shape:
                return None
            values = t.dense()
            if isinstance(t, MaskedTensor):
                mask = t.mask.reshape(shape)
            else:
                mask = np.broadcast_to(
                    t.unit_mask.reshape((-1,) + (1,) * (len(shape) - 1)), shape
                ).copy()
        if not np.isfinite(values).all():
            return None
        out[t.name] = (values, mask)
    return out if set(out) == set(shapes) else None


class Method:
    """Base class with no-op hooks; subclasses override what they need."""

    name = "base"
    #: Option names and defaults (``ctx.options`` may override them; see ``parse_options``).
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.options = parse_options(self.name, ctx.options, self.defaults)
        #: Messages the method wants sent outside ``outgoing`` (replies, resyncs); the node
        #: drains it after every merge and control message.
        self.outbox: list[tuple[str, Message]] = []
        self._signature: str | None = None

    def model_signature(self) -> str:
        """Hash of the exchanged parameters' names, shapes and dtypes (sent in Hello)."""
        if self._signature is None:
            items = signature_items(self.ctx.model.named_parameters())
            self._signature = model_signature(items)
        return self._signature

    def expected_messages(self, round_index: int) -> int:
        """How many data messages each sender sends per round (the node waits for them)."""
        return 1

    # --- training hooks ---------------------------------------------------------------
    def begin_round(self, round_index: int) -> None:
        """Called before local training of ``round_index``."""

    def loss_term(self) -> torch.Tensor | None:
        """An extra loss added to the task loss at every local step (e.g. a regulariser)."""
        return None

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. to keep pruned weights at zero)."""

    # --- gossip --------------------------------------------------------------------
    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Message]]:
        """Messages to send this round, as (peer_id, body) pairs."""
        return []

    def on_control(self, envelope: Envelope) -> list[tuple[str, Message]]:
        """React to a control message (resync request…); returns replies to send."""
        return []

    def merge(
        self, round_index: int, received: Mapping[str, Sequence[Envelope]]
    ) -> dict[str, float]:
        """Merge the round's messages (lists keyed by sender) into the model; returns stats."""
        return {}

    # --- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def density(self) -> float:
        """Parameter-weighted density of the model this method trains (1.0 when dense)."""
        return 1.0
