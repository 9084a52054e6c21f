"""``vc``: dense gossip with variance-corrected averaging (docs/algorithms.md §3).

Each round mixes like ``dense`` (Metropolis–Hastings weights, or the paper's β-mix
x = β·x_self + (1 − β)·mean(received) with ``mix=beta``), then rescales every tensor about its
mean so its variance returns to V* = β·var(self) + (1 − β)·median var(received), with the
factor clamped to [1, √N_eff] (N_eff = 1/Σ w² of the weights used). Options: ``beta`` (0.5),
``mix`` (``mh`` | ``beta``), ``exact`` (false), plus ``dense``'s ``robust`` and
``staleness_gamma``.

``exact=true`` is the authors' algorithm unchanged (Tian et al. 2024, arXiv 2404.04616, and
their DFL_torch code; docs/algorithms.md §3.2): the β-mix x = β·x_self + (1 − β)·mean(received),
then per tensor V* = β·var(self) + (1 − β)·mean var(received) (unbiased), s = √((V* + ε)/
(var(x) + ε)) with ε = 10⁻⁴ and no clamp (``aggregation.variance_correct_exact``); ``mix`` and
``robust`` are then ignored. The correction only matters when the peers' models are
uncorrelated — independent initialisations, as in the paper (``distinct_init``): started from
one model (spargo's default) the factor is ≤ 1.02 after round 0 and ``vc`` ≈ ``dense``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from spargo.node.aggregation import effective_peers, variance_correct, variance_correct_exact
from spargo.node.methods.base import MethodContext
from spargo.node.methods.dense import Arrays, DenseMethod, robust_mix


class VarianceCorrectedMethod(DenseMethod):
    """D-PSGD whose mixed tensors keep the spread their inputs had."""

    name = "vc"
    #: Push-sum does not fit: rescaling z about its mean would break mass conservation.
    mixes: ClassVar[tuple[str, ...]] = ("mh", "beta")

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        beta = float(self.options["beta"])
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"vc option beta={beta} must lie in [0, 1] (0.5 is the paper's)")

    def correct(
        self,
        own: Arrays,
        models: Mapping[str, Arrays],
        mixed: Arrays,
        row: Mapping[str, float],
    ) -> tuple[Arrays, float | None]:
        if not models:
            return mixed, 1.0
        beta = float(self.options["beta"])
        peers = sorted(models)
        if self.options["exact"]:
            return self._exact(own, models, beta)
        if self.options["mix"] == "beta" and self.robust[0] == "none":
            share = (1.0 - beta) / len(peers)
            row = {**{p: share for p in peers}, self.ctx.peer_id: beta}
            mixed, _ = robust_mix("none", 0, own, models, row)
        n_eff = effective_peers(np.array(list(row.values())))
        out: Arrays = {}
        factors = []
        for name, value in mixed.items():
            if value.size < 2:
                out[name] = value
                continue
            stack = np.stack([own[name], *(models[p][name] for p in peers)])
            out[name], factor = variance_correct(value, stack, beta=beta, n_eff=n_eff)
            factors.append(factor)
        return out, float(np.mean(factors)) if factors else 1.0

    def _exact(
        self, own: Arrays, models: Mapping[str, Arrays], beta: float
    ) -> tuple[Arrays, float | None]:
        """The authors' β-mix and unclamped correction (``exact=true``)."""
        peers = sorted(models)
        share = (1.0 - beta) / len(peers)
        row = {**{p: share for p in peers}, self.ctx.peer_id: beta}
        mixed, _ = robust_mix("none", 0, own, models, row)
        out: Arrays = {}
        factors = []
        for name, value in mixed.items():
            stack = np.stack([own[name], *(models[p][name] for p in peers)])
            out[name], factor = variance_correct_exact(value, stack, beta=beta)
            if value.size >= 2:
                factors.append(factor)
        return out, float(np.mean(factors)) if factors else 1.0
