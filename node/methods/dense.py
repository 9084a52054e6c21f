"""``dense``: D-PSGD — send the whole model, mix with Metropolis–Hastings weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from node.aggregation import weighted_average
from node.methods.base import Method, latest_of, matching_tensors, mixing_row
from node.params import exchangeable_parameters, load_arrays, to_arrays
from protocol import Envelope, FullModel, Message, NamedTensor


class DenseMethod(Method):
    """x_i ← Σ_j W_ij x_j over the neighbours heard from this round (missing → self)."""

    name = "dense"

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Message]]:
        arrays = to_arrays(exchangeable_parameters(self.ctx.model))
        body = FullModel(tensors=tuple(NamedTensor(name, a) for name, a in arrays.items()))
        return [(peer, body) for peer in targets]

    def merge(
        self, round_index: int, received: Mapping[str, Sequence[Envelope]]
    ) -> dict[str, float]:
        params = exchangeable_parameters(self.ctx.model)
        own = to_arrays(params)
        shapes = {name: a.shape for name, a in own.items()}
        models: dict[str, dict[str, np.ndarray]] = {}
        rejected = 0
        for sender, (_, body) in latest_of(received, FullModel).items():
            arrays = matching_tensors(body.tensors, shapes)
            if arrays is None:
                rejected += 1
            else:
                models[sender] = arrays
        row = mixing_row(self.ctx.weights, self.ctx.peer_id, sorted(models))
        peers = sorted(row)
        weights = np.array([row[p] for p in peers])
        mixed = {}
        for name, mine in own.items():
            stack = np.stack(
                [mine if p == self.ctx.peer_id else models[p].get(name, mine) for p in peers]
            )
            mixed[name] = weighted_average(stack, weights)
        load_arrays(params, mixed)
        return {"merged_peers": float(len(models)), "rejected_shape": float(rejected)}
