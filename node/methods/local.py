"""``local``: the no-communication reference — every peer trains alone on its own data.

A personalised method must beat this to justify its messages: SpaFL's per-peer accuracy, say,
is only worth its bytes if it is above what each peer reaches without talking to anyone
(docs/algorithms.md §8.3). It sends nothing, waits for nothing and merges nothing; its models
are personalised, so judge it on both bases (global and local test data). A real peer can run
it too (a baseline on the same hardware and data).
"""

from __future__ import annotations

from collections.abc import Sequence

from spargo.node.methods.base import Method
from spargo.node.methods.payloads import MergeResult, MergeStats, Payload, Received


class LocalMethod(Method):
    """Train alone: no payload out, none expected in, the model untouched by ``merge``."""

    name = "local"

    def expected_messages(self, round_index: int) -> int:
        return 0

    def outgoing(self, round_index: int, targets: Sequence[str]) -> list[tuple[str, Payload]]:
        return []

    def merge(self, round_index: int, received: Sequence[Received]) -> MergeResult:
        """Nothing to mix (a stray payload is ignored, never merged)."""
        return MergeResult(MergeStats(merged_peers=0))
