"""``cgt``: compressed gradient tracking — K-GT's correction over CHOCO-compressed streams.

docs/algorithms.md §10.2. The update of BEER (Zhao, Li, Li, Richtárik and Chi, "BEER: Fast
O(1/T) Rate for Decentralized Nonconvex Optimization with Communication Compression", 2022,
arXiv 2201.13320, Algorithm 1): both the model x and the tracking variable travel as
compressed differences to public copies (h for x, g for the tracker), with error feedback,
and each mixes through the public copies with a consensus step γ:

    x ← x + γ Σ_j W_ij (ĥ_j − ĥ_i),   tracker ← tracker + γ Σ_j W_ij (ĝ_j − ĝ_i).

Here the gradient is the round's local update (local steps, as in ``tracking``, K-GT, arXiv
2301.01313): the tracked quantity is d_i = x_i − z_i, and the correction follows
e_i ← (1 − ρ)(e_i + γ Σ_j W_ij (ĝ_j − ĝ_i)). Both streams are one CHOCO stream over the
joint tensors (``<name>`` and ``<name>@d``); the public copies start at 0 on every link, as
in BEER (no full copy first), and per-link sequence numbers, gap detection and resync
(``choco``) cover the tracker too: a lost delta is detected at the next one, the link
drops out of the consensus step until a full copy resyncs it, and ρ (``forget``) shrinks
the error a lost message left in Σ_i e_i by (1 − ρ) per round.

Stable by construction: the consensus step used is min(γ, γ_max) with
γ_max = δ = ratio (the compressor's contraction: ‖C(v) − v‖² ≤ (1 − δ)‖v‖² for top-k and
rand-k of a fraction δ), and ratio ≥ 0.01; tests/node/test_tracking_cgt.py checks that the
consensus distance shrinks geometrically at lr 0 for every compressor and the extreme
accepted options. With ``compressor = energy`` (the default, docs/algorithms.md §10.5,
``node.methods.energy_topk``) each message's k is chosen so that it contracts by at least γ,
and the step is γ itself. Options: ``compressor`` (energy | topk | randk), ``ratio`` (top-k
and rand-k), ``value_dtype``, ``gamma``, ``resync_after`` (as ``choco``), ``forget`` (ρ).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from spargo.node.methods.base import MethodContext
from spargo.node.methods.choco import ChocoMethod
from spargo.node.methods.tracking import Tracker

#: The smallest compression ratio accepted (the consensus step scales with it).
MIN_RATIO = 0.01


def consensus_step(gamma: float, ratio: float, compressor: str = "topk") -> float:
    """The step used: min(γ, δ) with δ = ``ratio`` (top-k / rand-k contraction); γ itself
    for the ``energy`` compressor, whose every message contracts by at least γ
    (``node.methods.energy_topk``, docs/algorithms.md §10.5).

    CHOCO-gossip's analysis (Koloskova et al. 2019, arXiv 1902.00340, Theorem 2) needs γ of
    order ρ²δ; the bound here drops the spectral gap ρ, which no peer knows, and is checked
    empirically on rings (the sparsest graphs we run) instead.
    """
    return gamma if compressor == "energy" else min(gamma, ratio)


class CompressedTrackingMethod(Tracker, ChocoMethod):
    """CHOCO gossip of (x, d) with the K-GT correction of ``tracking``."""

    name = "cgt"
    compressors: tuple[str, ...] = ("energy", "topk", "randk")
    gamma_forms = "a number in (0, 1] (e.g. 0.6; with energy also each message's share of ‖v‖²)"

    def __init__(self, ctx: MethodContext) -> None:
        try:
            ChocoMethod.__init__(self, ctx)
        except ValueError as exc:  # choco's checks name choco: name this method instead
            raise ValueError(str(exc).replace("choco option", f"{self.name} option")) from None
        ratio = float(self.options["ratio"])
        if ratio < MIN_RATIO:
            raise ValueError(
                f"{self.name} option ratio={ratio} must lie in [{MIN_RATIO}, 1], e.g. 0.19"
            )
        self._init_tracker()
        compressor = str(self.options["compressor"])
        self.step_used = consensus_step(self.gamma, ratio, compressor)
        self.gamma = self.step_used  # what ChocoMethod's consensus step uses
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Public copies start at 0 on every link, as in BEER (H⁰ = G⁰ = 0): the first
        message is already a compressed delta, no full copy; a link that loses its place
        later resyncs with a full copy as in ``choco``."""
        zeros = {
            name: np.zeros(shape, np.float32) for name, shape in self.signature().shapes.items()
        }
        self.public = {name: a.copy() for name, a in zeros.items()}
        self.stream_seq = 0
        for peer in self.ctx.weights:
            if peer != self.ctx.peer_id:
                self.copies[peer] = {name: a.copy() for name, a in zeros.items()}
                self.expected[peer] = 1
                self.last_sent[peer] = 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tracker": self.tracker_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.load_tracker_state(state["tracker"])
