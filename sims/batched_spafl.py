"""SpaFL for the batched engine: every peer's thresholds as ``[N, units]`` tensors.

The node's ``spafl`` method (docs/algorithms.md §1, ``sparse.thresholds``): every Linear but
the head (the head too with ``mask_head``) gets one trainable threshold τ per output unit; the
forward pass uses w·m with mᵢ = 1[mean_j |w_ij| − τᵢ > 0] (the ``min_density`` floor keeps the
top units), the backward treats the step as the identity (straight-through), and the loss adds
α_t·Σ exp(−τ), α_t ramped up over the first ``warmup`` rounds (§1.4). Each round a
peer sends τ; every ``weights_every``-th round (and the last, with ``final_merge``) also its
masked weights (whole units), which receivers mix coverage-normalised (self's value where no one
holds a unit) and variance-correct on the covered entries (``vc``). Then τ̄ = W_r τ, the
global-importance update w_ij ← w_ij − sgn(Σ_j w_ij)·(τ̄ᵢ − τᵢ(start of round))/fan-in, and
τ ← τ̄. Bytes: the ``Thresholds`` message has a fixed size; each peer's ``MaskedUpdate`` is
encoded for real (its size depends on how many units it keeps).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo.node.methods.payloads import MaskedArray, MaskedModel
from spargo.sims.batched_wire import Wire

if TYPE_CHECKING:
    import torch

    from spargo.sims.batched_mix import Edges


def masked_weights(names: Sequence[str], mask_head: bool) -> list[str]:
    """The thresholded weights: every Linear weight but the head's (the head's too with
    ``mask_head``, as ``sparse.attach_thresholds``)."""
    weights = [n for n in names if n.endswith(".weight")]
    return weights if mask_head else weights[:-1]


def exchanged_names(names: Sequence[str], mask_head: bool = False) -> list[str]:
    """The node's names of the exchanged weights: a thresholded layer's weight is stored as
    ``<module>.parametrizations.weight.original`` (after its bias, as ``named_parameters``)."""
    masked = set(masked_weights(names, mask_head))
    out: list[str] = []
    for name in names:
        module = name.rsplit(".", 1)[0]
        if name in masked:
            continue
        out.append(name)
        if name.endswith(".bias") and f"{module}.weight" in masked:
            out.append(f"{module}.parametrizations.weight.original")
    return out


class Thresholded:
    """τ of every thresholded layer (all Linear weights but the head, unless ``mask_head``)
    for all peers."""

    def __init__(
        self, names: Sequence[str], params: Sequence[torch.Tensor], options: Mapping[str, Any]
    ) -> None:
        import torch

        self.mask_head = bool(options["mask_head"])
        masked = set(masked_weights(names, self.mask_head))
        self.layers = [k for k, n in enumerate(names) if n in masked]
        self.base_alpha = float(options["alpha"])
        self.warmup = int(options["warmup"])
        #: α of the current round (``set_round``).
        self.alpha = self.base_alpha
        self.tau = [
            torch.zeros(params[k].shape[:2], dtype=params[k].dtype, device=params[k].device)
            for k in self.layers
        ]
        self.floor = [
            min(int(params[k].shape[1]), max(1, math.ceil(float(options["min_density"]) *
                                                    int(params[k].shape[1]))))
            for k in self.layers
        ]  # fmt: skip

    def set_round(self, round_index: int) -> None:
        """α_t = α/(1 + exp(5 − 10·t/P)) for t < P = ``warmup``, else α (the node's
        ``SpaFLMethod.alpha``; docs/algorithms.md §1.4)."""
        if round_index >= self.warmup:
            self.alpha = self.base_alpha
        else:
            self.alpha = self.base_alpha / (1.0 + math.exp(5.0 - 10.0 * round_index / self.warmup))

    def part(self, peers: slice) -> Thresholded:
        """The same thresholds for a slice of the peers (copies of their τ)."""
        out = copy.copy(self)
        out.tau = [t[peers].clone() for t in self.tau]
        return out

    def write_part(self, peers: slice, part: Thresholded) -> None:
        """Copy a ``part``'s τ back into these peers' rows."""
        for t, trained in zip(self.tau, part.tau, strict=True):
            t[peers] = trained

    def _masks(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """m = step(s) + (s − s.detach()), s = mean_j |w_ij| − τᵢ (value: the step) [N, out]."""
        import torch

        out = []
        for k, tau, floor in zip(self.layers, self.tau, self.floor, strict=True):
            s = params[k].abs().flatten(2).mean(dim=2) - tau
            kth = torch.topk(s.detach(), floor, dim=1).values[:, -1:]
            keep = (s > 0) | (s.detach() >= kth)
            out.append(keep.to(params[k].dtype) + (s - s.detach()))
        return out

    def effective(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The weights the forward pass uses: thresholded layers' rows times their mask."""
        out = list(params)
        for k, m in zip(self.layers, self._masks(params), strict=True):
            out[k] = params[k] * m.unsqueeze(-1)
        return out

    def unit_masks(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Which units each peer keeps now, per thresholded layer (bool [N, out])."""
        return [m.detach() > 0.5 for m in self._masks(params)]

    def regulariser(self) -> torch.Tensor:
        """α·Σ exp(−τ), summed over the peers too (each peer's gradient is its own)."""
        import torch

        return self.alpha * torch.stack([t.neg().exp().sum() for t in self.tau]).sum()

    def density(self, params: Sequence[torch.Tensor]) -> np.ndarray:
        """Per peer, the non-zero fraction of all effective Linear weights, head included."""
        from spargo.sims.batched_model import nonzero_fraction

        used = self.effective(params)
        return nonzero_fraction([used[k] for k in range(len(params)) if params[k].dim() == 3])


class SpaflSwarm:
    """SpaFL's per-round gossip for all peers (the thresholds live in ``Thresholded``)."""

    def __init__(self, options: Mapping[str, Any], model: Thresholded, rounds: int) -> None:
        self.options = dict(options)
        self.model = model
        self.rounds = rounds
        self.tau_start = [t.clone() for t in model.tau]
        self._tau_means = np.zeros(len(model.tau[0]) if model.tau else 0)

    def begin_round(self, round_index: int) -> None:
        """Remember τ before local training (Δτ of the global-importance update) and set the
        round's α (the warm-up)."""
        self.model.set_round(round_index)
        self.tau_start = [t.clone() for t in self.model.tau]

    def weights_round(self, round_index: int) -> bool:
        """Whether masked weights are gossiped in ``round_index`` (as the node decides)."""
        k = int(self.options["weights_every"])
        if k <= 0:
            return False
        last = round_index == self.rounds - 1
        return round_index % k == k - 1 or (bool(self.options["final_merge"]) and last)

    def merge(
        self,
        params: list[torch.Tensor],
        taus: tuple[Edges, torch.Tensor],
        weights: tuple[Edges, torch.Tensor, tuple[np.ndarray, np.ndarray]],
        round_index: int,
    ) -> np.ndarray | None:
        """Weights (on weight rounds), then thresholds and the global-importance update;
        ``taus``: the edges whose τ arrived and their mixing matrix; ``weights``: the edges
        whose masked weights arrived, their matrix and rows (they differ when messages are
        lost). Returns each peer's mean variance factor of the weights [N] (None: no weights
        round). ``threshold_means`` then holds each peer's mean mixed τ."""
        import torch

        factors = None
        _, matrix = taus
        if self.weights_round(round_index):
            factors = self._mix_weights(params, *weights)
        total, count = np.zeros(len(params[0])), 0
        for k, tau, start in zip(self.model.layers, self.model.tau, self.tau_start, strict=True):
            mixed64 = torch.sparse.mm(matrix, tau.to(torch.float64))
            total += mixed64.sum(dim=1).cpu().numpy()
            count += int(tau.shape[1])
            mixed = mixed64.to(tau.dtype)
            shift = torch.sign(params[k].sum(dim=2)) * (mixed - start) / params[k].shape[2]
            params[k].sub_(shift.unsqueeze(-1))
            tau.copy_(mixed)
        self._tau_means = total / count if count else total
        return factors

    def threshold_means(self) -> np.ndarray:
        """Each peer's mean threshold after the last merge, from the float64 mix [N] (the
        node's ``threshold_mean``; 0.0 without thresholds)."""
        return self._tau_means

    def _mix_weights(
        self,
        params: list[torch.Tensor],
        edges: Edges,
        matrix: torch.Tensor,
        row: tuple[np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """Coverage-normalised mix of the units each peer holds, then variance correction;
        returns each peer's mean correction factor over the corrected tensors (1.0: none) [N].
        """
        import torch

        from spargo.sims.batched_mix import variance_correct_all

        units = dict(zip(self.model.layers, self.model.unit_masks(params), strict=True))
        heard = torch.as_tensor(edges.in_degree > 0, device=params[0].device)
        factors = []
        for k, p in enumerate(params):
            n = len(p)
            held = torch.ones_like(p, dtype=torch.bool)
            if k in units:
                held = units[k].unsqueeze(-1).expand_as(p)
            flat, mask = p.reshape(n, -1), held.reshape(n, -1).to(torch.float64)
            num = torch.sparse.mm(matrix, flat.to(torch.float64) * mask)
            den = torch.sparse.mm(matrix, mask)
            covered = den > 0
            mixed = torch.where(covered, (num / torch.where(covered, den, 1.0)).to(p.dtype), flat)
            if bool(self.options["vc"]) and flat.shape[1] > 1:
                mixed, scale = variance_correct_all(
                    mixed, flat, edges, row, float(self.options["beta"]), held=held, active=covered
                )
                factors.append(scale)
            p.copy_(torch.where(heard.view(-1, 1), mixed, flat).view_as(p))
        return np.mean(factors, axis=0) if factors else np.ones(len(params[0]))

    def send(
        self,
        wire: Wire,
        round_index: int,
        fanout: np.ndarray,
        names: Sequence[str],
        params: Sequence[torch.Tensor],
    ) -> list[np.ndarray]:
        """Count this round's messages: τ to every target, then (weight rounds) each peer's
        real ``MaskedUpdate``; returns the bytes of each message a peer sends per target,
        ``[τ sizes [N]]`` or ``[τ sizes, update sizes]``."""
        sizes = wire.send("tau", round_index, fanout)
        if not self.weights_round(round_index):
            return [sizes]
        units = {k: u.cpu().numpy() for k, u in
                 zip(self.model.layers, self.model.unit_masks(params), strict=True)}  # fmt: skip
        stored = dict(zip(names, (p.cpu().numpy() for p in params), strict=True))
        head = self.model.mask_head
        node_names = dict(zip(exchanged_names(names, head), stored_order(names, head), strict=True))
        update = np.zeros(len(fanout), dtype=np.int64)
        for peer in np.flatnonzero(fanout > 0).tolist():
            tensors: dict[str, MaskedArray] = {}
            for wire_name, name in node_names.items():
                array = stored[name][peer]
                k = names.index(name)
                if k in units:  # one bit per unit (row), as the node's SpaFL sends it
                    rows = units[k][peer].reshape((-1,) + (1,) * (array.ndim - 1))
                    held = np.broadcast_to(rows, array.shape)
                    tensors[wire_name] = MaskedArray(array, held, by_row=True)
                else:
                    tensors[wire_name] = MaskedArray(array)
            update[peer] = wire.encoded(peer, round_index, MaskedModel(tensors))
        wire.add(update, fanout)
        return [sizes, update]


def stored_order(names: Sequence[str], mask_head: bool = False) -> list[str]:
    """Our names in the order of ``exchanged_names`` (a masked weight after its bias)."""
    masked = set(masked_weights(names, mask_head))
    out: list[str] = []
    for name in names:
        if name in masked:
            continue
        out.append(name)
        module = name.rsplit(".", 1)[0]
        if name.endswith(".bias") and f"{module}.weight" in masked:
            out.append(f"{module}.weight")
    return out
