"""``tracking``: gradient tracking with local steps (K-GT), dense gossip.

docs/algorithms.md §10.1. Liu, Lin, Koloskova and Stich, "Decentralized Gradient Tracking
with Local Steps", 2023, arXiv 2301.01313, Algorithm 1 (K-GT), written in parameter units so
the node's own training loop (any step count K, any learning rate η) runs it unchanged:

- every local step adds the correction: z ← z − η(∇f_i(z) + c_i), done here as an
  ``after_step`` shift z ← z − e_i / K with e_i = Kη c_i (K = the last round's step count);
- after training, d_i = x_i − z_i (the round's update, correction included) travels with z_i;
- merge: x_i ← Σ_j W_ij z_j and e_i ← (1 − ρ)(e_i + Σ_j W_ij d_j − d_i).

With ρ = 0 and a doubly-stochastic W, Σ_i e_i stays 0 (the tracking invariant), so every
peer's correction e_i converges to (mean update − own update): each peer then steps along
the global direction, which is what removes label-skew drift. A lost message (its weight
goes to self, ``mixing_row``) breaks Σ_i e_i = 0 by W_ij(d_j − d_i); the forgetting factor
ρ (option ``forget``) shrinks any such error by (1 − ρ) per round, so the invariant recovers
geometrically after loss stops instead of carrying the error for ever.

The update d travels as extra tensors named ``<name>@d`` in the same payload (the signature
lists them, so peers of other methods refuse it). Options: ``forget`` (ρ in [0, 1)) and
everything ``dense`` takes (``robust``, ``staleness_gamma``, ``mix``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from spargo.node.methods.base import Method, MethodContext
from spargo.node.methods.dense import DenseMethod
from spargo.node.methods.payloads import MergeResult, Payload, Received, is_control
from spargo.node.params import exchangeable_parameters

#: Suffix of the tensors that carry a peer's round update d (``<name>@d``).
UPDATE_SUFFIX = "@d"


class Tracker(Method):
    """The K-GT state of one peer: correction e, round start x, the update tensors d.

    A mixin, listed before a Method whose merge mixes every tensor ``exchanged()`` returns
    (dense averaging or a CHOCO consensus step): ``exchanged`` adds d, the round hooks keep
    e, x and d, and ``merge`` turns the change the mixing made to d into the new correction.
    """

    def _init_tracker(self) -> None:
        forget = float(self.options["forget"])
        if not 0.0 <= forget < 1.0:
            raise ValueError(
                f"{self.name} option forget={forget} must lie in [0, 1), e.g. forget=0.02"
            )
        params = exchangeable_parameters(self.ctx.model)
        self._params = params
        self.update = [
            (name + UPDATE_SUFFIX, nn.Parameter(torch.zeros_like(p.detach()), requires_grad=False))
            for name, p in params
        ]
        self.correction = [torch.zeros_like(p.detach()) for _, p in params]
        self.start = [p.detach().clone() for _, p in params]
        self.steps = 0
        self.last_steps = 0
        #: d_i as sent in the round's first gossip step (what the correction compares with).
        self._sent_update = self.update_copy()

    def tracked(self) -> list[tuple[str, nn.Parameter]]:
        """Model parameters, then the update tensors (``<name>@d``)."""
        return [*self._params, *self.update]

    def track_begin(self) -> None:
        """Round start: remember x_i, count this round's steps from 0."""
        for start, (_, p) in zip(self.start, self._params, strict=True):
            start.copy_(p.detach())
        self.steps = 0

    def track_step(self) -> None:
        """One local step's correction: z ← z − e_i / K."""
        self.steps += 1
        if self.last_steps == 0:
            return
        with torch.no_grad():
            for e, (_, p) in zip(self.correction, self._params, strict=True):
                p.sub_(e.to(p.device, p.dtype), alpha=1.0 / self.last_steps)

    def track_send(self) -> None:
        """Before sending: d_i = x_i − z_i."""
        if self.steps:
            self.last_steps = self.steps
        with torch.no_grad():
            for (_, d), start, (_, p) in zip(self.update, self.start, self._params, strict=True):
                d.copy_(start - p.detach())

    def track_merge(self, before: Sequence[torch.Tensor]) -> None:
        """After mixing: e_i ← (1 − ρ)(e_i + mixed d_i − d_i)."""
        keep = 1.0 - float(self.options["forget"])
        with torch.no_grad():
            for e, old, (_, d) in zip(self.correction, before, self.update, strict=True):
                e.add_(d.detach() - old).mul_(keep)

    def update_copy(self) -> list[torch.Tensor]:
        """d_i as it is now (to compare after mixing)."""
        return [d.detach().clone() for _, d in self.update]

    def exchanged(self) -> list[tuple[str, nn.Parameter]]:
        return self.tracked()

    def begin_round(self, round_index: int) -> None:
        self.track_begin()

    def after_step(self) -> None:
        self.track_step()

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        if self.first_gossip_step:  # later steps send the d mixed so far
            self.track_send()
        return super().outgoing(round_index, targets)

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        """Mix (x, d) once per gossip step; correct e once per round, after the last step,
        with the change all Q steps made to d (docs/algorithms.md §10.1). A control-only
        merge (a resync ask, on arrival) mixes nothing and leaves e alone."""
        if received and all(is_control(item.payload) for item in received):
            return super().merge(round_index, received)
        if self.first_gossip_step:
            self._sent_update = self.update_copy()
        result = super().merge(round_index, received)
        if self.last_gossip_step:
            self.track_merge(self._sent_update)
        return result

    def tracker_state(self) -> dict[str, Any]:
        """The correction and the step count (a checkpoint's share)."""
        return {
            "correction": {n: e.clone() for (n, _), e in zip(self._params, self.correction)},
            "last_steps": self.last_steps,
        }

    def load_tracker_state(self, state: Mapping[str, Any]) -> None:
        """Restore ``tracker_state``; ValueError when it does not fit this model."""
        saved = state["correction"]
        for (name, p), e in zip(self._params, self.correction, strict=True):
            if name not in saved or tuple(saved[name].shape) != tuple(p.shape):
                raise ValueError(f"tracking state: correction {name!r} does not fit this model")
            e.copy_(saved[name])
        self.last_steps = int(state["last_steps"])


class TrackingMethod(Tracker, DenseMethod):
    """K-GT: dense D-PSGD whose local steps follow the tracked global direction."""

    name = "tracking"

    def __init__(self, ctx: MethodContext) -> None:
        DenseMethod.__init__(self, ctx)
        self._init_tracker()

    def state_dict(self) -> dict[str, Any]:
        return self.tracker_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.load_tracker_state(state)


def correction_sum(methods: Sequence[Method]) -> float:
    """‖Σ_i e_i‖ over peers' trackers (0 while the tracking invariant holds)."""
    total: np.ndarray | None = None
    for m in methods:
        if isinstance(m, Tracker):
            flat = torch.cat([e.reshape(-1).cpu() for e in m.correction]).double().numpy()
            total = flat if total is None else total + flat
    return 0.0 if total is None else float(np.linalg.norm(total))
