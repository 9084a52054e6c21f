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
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from protocol import Envelope, Message, NamedTensor, model_signature

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


class Method:
    """Base class with no-op hooks; subclasses override what they need."""

    name = "base"

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        #: Messages the method wants sent outside ``outgoing`` (replies, resyncs); the node
        #: drains it after every merge and control message.
        self.outbox: list[tuple[str, Message]] = []
        self._signature: str | None = None

    def model_signature(self) -> str:
        """Hash of the exchanged parameters' names, shapes and dtypes (sent in Hello)."""
        if self._signature is None:
            items = [
                (name, tuple(p.shape), str(p.dtype).removeprefix("torch."))
                for name, p in self.ctx.model.named_parameters()
            ]
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
