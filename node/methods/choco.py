"""``choco``: CHOCO-SGD — compressed deltas of public copies, then a consensus step.

docs/algorithms.md §5.

Every peer i keeps x̂_i (its public copy, as its neighbours hold it) and x̂_j for each
neighbour. Each round, after local training: q = C(x − x̂_i) (top-k or shared-seed rand-k of
⌈ratio·n⌉ entries per tensor, values in fp16/int8/fp32 exactly as the receiver will decode
them), x̂_i += q, send q as a ``StreamDelta``; on receipt x̂_j += q_j; then
x ← x + γ Σ_j W_ij (x̂_j − x̂_i). The difference x − x̂_i left unsent is CHOCO's own error
memory, so no separate residual is kept.

Streams and resync. ``StreamDelta.stream_seq`` numbers the sender's stream of q's (one q per
round, the same on every link). A sender that skipped a link (a sampler left it out, or a
restart) sends that link a ``StreamCopy`` of x̂_i instead, current to its stream number; a
receiver resets x̂_j from any StreamCopy. A receiver that sees a gap (a lost delta) leaves
x̂_j alone, drops j from the consensus step and replies with a ``ResyncAsk``; the sender
(whose ``merge`` gets the ask on arrival, alone) answers with a StreamCopy in its next
``outgoing`` (sent in its current round, so a rounds-mode receiver never discards it as
stale). The very first message on every link is such a copy (a public copy needs a start).

Options: ``compressor`` (``topk`` | ``randk``), ``ratio`` (0.1), ``value_dtype`` (``float16``
| ``int8`` | ``float32``), ``gamma`` (consensus step size; ``auto`` = ``safe_gamma``, see
below), ``resync_after`` (rounds before a lost resync is asked for again, 3).

The consensus step. CHOCO-SGD's theorem (Koloskova, Stich & Jaggi 2019, arXiv 1902.00340,
Thm. 2) gives a γ that is always stable, γ = δ²ω / (16δ + δ² + 4β² + 2δβ² − 8δω) (δ the
spectral gap of W, β = ‖I − W‖₂, ω the compressor's quality: E‖C(v) − v‖² ≤ (1 − ω)‖v‖²), but
it is ~10⁻⁵ for our graphs and no peer knows δ. The instability it guards against is the
public copy lagging the model: each step moves x by up to γβ‖x̂‖ while compression closes only a
fraction ω of the gap, so for rand-k we take γ = ω/β̄ with β̄ = 2 ≥ ‖I − W‖₂ for every
symmetric stochastic W — a bound every peer knows; ω is that of the sparsest tensor, k/d
with k = max(1, ⌈ratio·d⌉). Top-k closes far more than k/d of the gap on real differences
(their energy is concentrated), so it gets γ = min(2ω, 1/2). Measured, pure consensus of
Gaussian models, 16–64 peers on ring, small-world, Erdős–Rényi, star, complete and 4-regular
graphs, ratio 0.01–1: every case contracts; γ = 0.8 at ratio 0.1 diverges on all of them,
rand-k at ratio 0.1 already at γ = 0.2, top-k at 0.4 (docs/algorithms.md §5.6).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from spargo import sparse
from spargo.node.methods.base import Method, MethodContext
from spargo.node.methods.energy_topk import energy_topk
from spargo.node.methods.payloads import (
    MergeResult,
    MergeStats,
    Payload,
    Received,
    ResyncAsk,
    SparseValues,
    StreamCopy,
    StreamDelta,
    by_sender,
)
from spargo.node.params import load_arrays, to_arrays
from spargo.node.payload import received_values

Arrays = dict[str, np.ndarray]
_SEED_MASK = (1 << 63) - 1


def stream_seed(seed: int, peer_id: str, link_seq: int, name: str) -> int:
    """The rand-k seed of one tensor of one delta: the same on sender and receivers."""
    digest = hashlib.blake2b(f"{seed}:{peer_id}:{link_seq}:{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & _SEED_MASK


def safe_gamma(sizes: Sequence[int], ratio: float, compressor: str = "randk") -> float:
    """The default consensus step: ω = min over tensors of k/d (k = max(1, ⌈ratio·d⌉) of d
    entries sent), then γ = ω/2 for rand-k and min(2ω, 1/2) for top-k (module docstring;
    docs/algorithms.md §5.6)."""
    omegas = [max(1, math.ceil(ratio * d - 1e-9)) / d for d in sizes if d > 0]
    omega = min(1.0, min(omegas, default=1.0))
    return min(2.0 * omega, 0.5) if compressor == "topk" else omega / 2.0


class ChocoMethod(Method):
    """CHOCO-SGD gossip with per-sender streams, gap detection and resync."""

    name = "choco"
    #: The compressors this method accepts (``energy`` needs a step tied to it: cgt).
    compressors: tuple[str, ...] = ("topk", "randk")
    #: What ``gamma`` may be, for its error line (cgt's is a number: its default is 0.6).
    gamma_forms = "auto or lie in (0, 1] (e.g. 0.05)"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        if self.options["compressor"] not in self.compressors:
            names = ", ".join(self.compressors)
            raise ValueError(
                f"choco option compressor={self.options['compressor']!r} must be one of {names}"
            )
        if self.options["value_dtype"] not in ("float16", "int8", "float32"):
            raise ValueError("choco option value_dtype must be float16, int8 or float32")
        if not 0.0 < float(self.options["ratio"]) <= 1.0:
            raise ValueError("choco option ratio must lie in (0, 1], e.g. 0.1")
        self.gamma = self._gamma(str(self.options["gamma"]))
        self.public: Arrays | None = None  # x̂_i
        self.copies: dict[str, Arrays] = {}  # x̂_j
        self.expected: dict[str, int] = {}  # next link_seq wanted from j
        self.stream_seq = -1  # last q this peer emitted
        self.last_sent: dict[str, int] = {}  # stream number each link is current to
        self.pending: dict[str, int] = {}  # round a resync was requested from j

    def _gamma(self, spec: str) -> float:
        if spec == "auto":
            return safe_gamma(
                [int(np.prod(s)) for s in self.signature().shapes.values()],
                float(self.options["ratio"]),
                str(self.options["compressor"]),
            )
        try:
            gamma = float(spec)
        except ValueError:
            gamma = math.nan
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"choco option gamma={spec} must be {self.gamma_forms}")
        return gamma

    # --- sending -----------------------------------------------------------------------
    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        x = to_arrays(self.exchanged())
        delta: StreamDelta | None = None
        if self.public is None:
            self.public = {n: a.copy() for n, a in x.items()}
            self.stream_seq = 0
        else:
            self.stream_seq += 1
            delta = self._compress(x, self.stream_seq)
        full: StreamCopy | None = None
        out: list[tuple[str, Payload]] = []
        for peer in targets:
            if delta is not None and self.last_sent.get(peer) == self.stream_seq - 1:
                out.append((peer, delta))
            else:
                if full is None:
                    full = StreamCopy(
                        self.stream_seq, {n: a.copy() for n, a in self.public.items()}
                    )
                out.append((peer, full))
            self.last_sent[peer] = self.stream_seq
        return out

    def _compress(self, x: Arrays, link_seq: int) -> StreamDelta:
        """q = C(x − x̂_i) per tensor; x̂_i += q exactly as receivers will decode it."""
        public = self.public or {}
        ratio, dtype = float(self.options["ratio"]), str(self.options["value_dtype"])
        tensors: dict[str, SparseValues] = {}
        for name, value in x.items():
            diff = (value - public[name]).reshape(-1)
            k = max(1, math.ceil(ratio * diff.size - 1e-9))
            seed = None
            wire_dtype = dtype
            if self.options["compressor"] == "energy":  # cgt only (docs/algorithms.md §10.5)
                index, wire_dtype = energy_topk(diff, self.gamma, dtype)
            elif self.options["compressor"] == "topk":
                index = sparse.topk(torch.from_numpy(diff), k)[0].numpy()
            else:
                seed = stream_seed(self.ctx.seed, self.ctx.peer_id, link_seq, name)
                index = sparse.randk_indices(diff.size, k, seed).numpy()
            raw = diff[index]
            public[name].reshape(-1)[index] += received_values(raw, wire_dtype)
            tensors[name] = SparseValues(tuple(value.shape), index, raw, seed, wire_dtype)
        return StreamDelta(link_seq, tensors)

    # --- receiving ---------------------------------------------------------------------
    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        asks = [item for item in received if isinstance(item.payload, ResyncAsk)]
        for item in asks:
            # The link is no longer current: the next outgoing sends it a StreamCopy.
            self.last_sent.pop(item.sender, None)
        if asks and len(asks) == len(received):
            return MergeResult()  # control only: no consensus step
        x = to_arrays(self.exchanged())
        counts = dict.fromkeys(("rejected", "gaps", "stale", "resyncs"), 0)
        replies: list[tuple[str, Payload]] = []
        streams: dict[str, list[StreamCopy | StreamDelta]] = by_sender(
            received, (StreamCopy, StreamDelta)
        )
        for sender, bodies in streams.items():
            if sender == self.ctx.peer_id or sender not in self.ctx.weights:
                counts["rejected"] += len(bodies)
                continue
            for body in sorted(bodies, key=_stream_order):
                self._receive(sender, body, round_index, counts, replies)
        stats = MergeStats(
            merged_peers=self._consensus(x),
            rejected=counts["rejected"],
            stale=counts["stale"],
            gaps=counts["gaps"],
            resyncs=counts["resyncs"],
        )
        return MergeResult(stats, replies)

    def _receive(
        self,
        sender: str,
        body: StreamCopy | StreamDelta,
        round_index: int,
        counts: dict[str, int],
        replies: list[tuple[str, Payload]],
    ) -> None:
        if isinstance(body, StreamCopy):
            self.copies[sender] = {n: np.array(a, dtype=np.float32) for n, a in body.arrays.items()}
            self.expected[sender] = body.stream_seq + 1
            self.pending.pop(sender, None)
            counts["resyncs"] += 1
            return
        want = self.expected.get(sender)
        if want is not None and body.stream_seq < want:
            counts["stale"] += 1
            return
        if want is None or body.stream_seq > want or sender in self.pending:
            counts["gaps"] += 1
            self._ask_resync(sender, round_index, replies)
            return
        copy = self.copies[sender]
        for name, t in body.tensors.items():
            copy[name].reshape(-1)[t.positions] += t.values
        self.expected[sender] = body.stream_seq + 1

    def _ask_resync(
        self, sender: str, round_index: int, replies: list[tuple[str, Payload]]
    ) -> None:
        asked = self.pending.get(sender)
        if asked is not None and round_index - asked < int(self.options["resync_after"]):
            return
        self.pending[sender] = round_index
        self.copies.pop(sender, None)
        seq = max(0, self.expected.get(sender, 0) - 1)
        replies.append((sender, ResyncAsk(seq)))

    def _consensus(self, x: Arrays) -> int:
        """x ← x + γ Σ_j W_ij (x̂_j − x̂_i) over neighbours whose copy is in sync."""
        if self.public is None:
            return 0
        gamma = self.gamma
        synced = [
            j
            for j in sorted(self.copies)
            if j != self.ctx.peer_id and j in self.ctx.weights and j not in self.pending
        ]
        if not synced:
            return 0
        out = {}
        for name, value in x.items():
            pull = np.zeros(value.shape, dtype=np.float64)
            for j in synced:
                pull += self.ctx.weights[j] * (self.copies[j][name] - self.public[name])
            out[name] = (value + gamma * pull).astype(np.float32)
        load_arrays(self.exchanged(), out)
        return len(synced)

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def tensors(arrays: Arrays) -> dict[str, torch.Tensor]:
            return {n: torch.from_numpy(a.copy()) for n, a in arrays.items()}

        return {
            "public": None if self.public is None else tensors(self.public),
            "copies": {j: tensors(c) for j, c in self.copies.items()},
            "expected": dict(self.expected),
            "stream_seq": self.stream_seq,
            "pending": dict(self.pending),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        def arrays(tensors: Mapping[str, torch.Tensor]) -> Arrays:
            return {n: t.detach().cpu().numpy().astype(np.float32) for n, t in tensors.items()}

        shapes = dict(self.signature().shapes)
        public = state["public"]
        if public is not None and {n: tuple(t.shape) for n, t in public.items()} != shapes:
            raise ValueError("choco state: the public copy does not fit this model")
        self.public = None if public is None else arrays(public)
        self.copies = {str(j): arrays(c) for j, c in state["copies"].items()}
        self.expected = {str(j): int(s) for j, s in state["expected"].items()}
        self.pending = {str(j): int(r) for j, r in state["pending"].items()}
        self.stream_seq = int(state["stream_seq"])
        # Neighbours may hold a newer x̂_i than this checkpoint: resend full copies first.
        self.last_sent = {}


def _stream_order(body: StreamCopy | StreamDelta) -> tuple[int, int]:
    """Sort key: by stream number, a StreamCopy before the StreamDelta of its number."""
    return (body.stream_seq, 0 if isinstance(body, StreamCopy) else 1)
