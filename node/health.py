"""What a peer knows about its own health: neighbours gone silent, drops from every layer,
and whether a checkpoint on disk was made for it.

A mixin of ``node.node.Node`` (which sets ``config``, ``view``, ``transport``, ``counters``
and ``departed``). Silence is counted per expected neighbour and round; a neighbour that
delivered nothing for ``NodeConfig.silent_rounds`` consecutive rounds is named in a warning,
in every ``RoundMetrics.silent`` (so in metrics.jsonl, the status topic, ``spargo monitor``
and the lab summary) until it delivers again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from torch import nn

from spargo.node.config import NodeConfig
from spargo.node.metrics import Counters
from spargo.node.transports.base import DropReporter, Transport
from spargo.node.view import PeerView

log = logging.getLogger("spargo.node")


class PeerHealth:
    """Silence tracking and drop collection for ``Node``."""

    config: NodeConfig
    view: PeerView
    transport: Transport
    counters: Counters
    departed: set[str]

    def _init_health(self) -> None:
        self._resume_decided = False
        self._checkpoint_due = False
        #: Checkpoint writes that failed (each retried the next round).
        self.checkpoint_failures = 0
        #: Consecutive rounds each expected neighbour delivered nothing.
        self._silent_for: dict[str, int] = {}
        self._silent_warned: tuple[str, ...] = ()
        self._heard_async: set[str] = set()

    def _track_silence(self, expected: Iterable[str], heard: Iterable[str]) -> None:
        """Count a silent round for each expected neighbour that delivered nothing; warn
        (once per change) when neighbours have been silent ``silent_rounds`` rounds."""
        heard = set(heard)
        for peer in expected:
            self._silent_for[peer] = 0 if peer in heard else self._silent_for.get(peer, 0) + 1
        silent = self.silent_neighbours()
        if silent and silent != self._silent_warned:
            everyone = set(silent) >= set(self.view.neighbours) - self.departed
            log.warning(
                "%s: %s for %d+ rounds from %s",
                self.config.peer_id,
                # every neighbour still running (those that said Bye are not counted)
                "merged nothing from any live neighbour" if everyone else "nothing arrived",
                self.config.silent_rounds,
                ", ".join(silent),
            )
        elif not silent and self._silent_warned:
            log.info("%s: every neighbour is delivering again", self.config.peer_id)
        self._silent_warned = silent

    def silent_neighbours(self) -> tuple[str, ...]:
        """Neighbours (not departed) silent for at least ``silent_rounds`` rounds, sorted."""
        return tuple(
            sorted(
                p
                for p, rounds in self._silent_for.items()
                if rounds >= self.config.silent_rounds and p not in self.departed
            )
        )

    def all_drops(self) -> dict[str, int]:
        """Drops by reason from every layer: the node's, then the transport's (prefixed
        ``transport_``), so an operator sees bad envelopes and queue overflow too."""
        drops = dict(self.counters.drops)
        if isinstance(self.transport, DropReporter):
            for reason, count in self.transport.drop_counts().items():
                if count:
                    drops[f"transport_{reason}"] = count
        return drops


def checkpoint_mismatch(
    state: dict[str, Any], config: NodeConfig, model: nn.Module, signature: str
) -> str | None:
    """What a loaded checkpoint was made for, when that is not this peer; None if it fits."""
    made_for = state.get("peer_id", config.peer_id)
    if made_for != config.peer_id:
        return f"peer {made_for!r}, not {config.peer_id!r}"
    method = state.get("method_name", config.method)
    if method != config.method:
        return f"method {method!r}, not {config.method!r}"
    saved = state.get("model")
    if not isinstance(saved, dict):
        return "no model (the file has no model state)"
    ours = model.state_dict()
    for name in sorted(set(ours) | set(saved)):
        if name not in saved or name not in ours:
            return f"another model (tensor {name!r} is in only one of them)"
        theirs = getattr(saved[name], "shape", None)
        if theirs != ours[name].shape:
            return (
                f"another model (tensor {name!r} has shape {tuple(theirs or ())}, "
                f"this model {tuple(ours[name].shape)})"
            )
    if state.get("signature", signature) != signature:
        return "another method configuration (its payload signature differs)"
    return None
