"""``cgt`` and ``cgt_masked``'s round in the batched engine, under lost and late messages.

The node's ``cgt`` (``node.methods.cgt``, docs/algorithms.md §10.2) gossips (z, d) over one
CHOCO stream per sender whose public copies start at 0 on every link: round r sends the
compressed delta numbered r + 1. Each link's stream state (which copy the receiver holds, the
number it expects next, a pending resync, whether the next message is a delta or a
``StreamCopy``, the ``ResyncAsk`` replies) is ``sims.batched_faults_choco.ChocoLinks`` with
``start_at_zero``; the copies a receiver may still hold are the sender's t̂ of recent stream
numbers (``ChocoSwarm.history``), so the consensus step t ← t + γ' Σⱼ Wᵢⱼ (t̂ⱼ − t̂ᵢ) runs over
the links in sync only, in the node's arithmetic (``ChocoSwarm.consensus``). Then K-GT's
correction e ← (1 − ρ)(e + mixed d − d) (``sims.batched_tracking.Tracking``) and
``cgt_masked``'s masks. Bytes are charged on the sent edges, received on the merged ones.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from spargo.sims.batched_faults_choco import ChocoLinks, SwarmChoco, fanout_kinds

if TYPE_CHECKING:
    import torch

    from spargo.sims.batched_mix import Gossip
    from spargo.sims.batched_tracking import TrackingSwarm
    from spargo.sims.batched_wire import Wire


class SwarmCgt(SwarmChoco):
    """``cgt``'s round in ``sims.batched.BatchedSwarm`` (which sets these attributes)."""

    params: list[torch.Tensor]
    wire: Wire
    extra_drops: Counter[str]
    choco_links: ChocoLinks

    def _cgt(
        self, tracking: TrackingSwarm, gossip: Gossip, round_index: int
    ) -> list[dict[str, float]]:
        """One round of ``cgt`` / ``cgt_masked`` for every peer; merge statistics per peer."""
        from spargo.sims.batched_tracking import tracked_names

        r, state, streams = round_index, self.choco_links, tracking.streams
        assert streams is not None
        links = self.links(r)
        copy = state.kinds(r, links)
        before = tracking.tracking.send(self.params)
        tensors = [*self.params, *tracking.tracking.update]
        names = tracked_names(tracking.names)
        kinds = fanout_kinds(links.sent, copy, state)
        sizes = streams.send_streams(r, tensors, names, self.wire, kinds)
        ask, pulls, synced = self._stream_receive(r, links, copy, sizes, gossip)
        streams.consensus(tensors, pulls, r)
        tracking.tracking.merged(before)
        if tracking.masks is not None:
            tracking.masks.apply(self.params, slice(None))
        return self._stream_finish(r, links, ask, synced)
