"""The simulator's view into a peer's method: outgoing-payload filters and a merge log.

The node calls ``method.outgoing`` and ``method.merge``; the simulator needs to see both (a
fault may rewrite a peer's outgoing payloads per target, and every merge is logged). Rather
than shadow those methods on the instance, ``observe`` makes the method an instance of a
subclass of its own class, made once per class, whose ``outgoing`` and ``merge`` call the
class's own and then the hooks. ``isinstance`` and every other attribute are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from spargo.node.methods.base import Method

#: ``filter(round_index, [(target, payload), ...]) -> [(target, payload), ...]``.
OutgoingFilter = Callable[[int, list[tuple[str, Any]]], list[tuple[str, Any]]]


@dataclass
class MergeLog:
    """Swarm-wide merge totals: merges that took in anything, and the staleness of what they
    took (per sender, the receiver's round minus the round of the newest message merged)."""

    merges: int = 0
    merged_messages: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0

    def observe(self, round_index: int, received: Mapping[str, Sequence[Any]]) -> None:
        """Account one ``method.merge(round_index, received)`` call (lists of messages that
        carry a ``round``, keyed by sender)."""
        newest = [max(e.round for e in messages) for messages in received.values() if messages]
        if not newest:
            return
        late = [max(0, round_index - r) for r in newest]
        self.merges += 1
        self.merged_messages += len(late)
        self.staleness_sum += sum(late)
        self.staleness_max = max(self.staleness_max, *late)

    def summary(self) -> dict[str, Any]:
        """``merges``, ``staleness_mean`` and ``staleness_max`` (None before any merge)."""
        mean = self.staleness_sum / self.merged_messages if self.merged_messages else None
        return {
            "merges": self.merges,
            "staleness_mean": None if mean is None else round(mean, 6),
            "staleness_max": self.staleness_max if self.merges else None,
        }


@dataclass
class MethodHooks:
    """What the simulator attaches to one peer's method."""

    merge_log: MergeLog
    filters: list[OutgoingFilter] = field(default_factory=list)


class _Observed(Method):
    """Mixed in before a method's class (see ``observe``)."""

    sim_hooks: MethodHooks

    def outgoing(self, round_index: int, targets: Sequence[str]) -> Any:
        messages = super().outgoing(round_index, targets)
        for apply in self.sim_hooks.filters:
            messages = apply(round_index, list(messages))
        return messages

    def merge(self, round_index: int, received: Any) -> Any:
        self.sim_hooks.merge_log.observe(round_index, received)
        return super().merge(round_index, received)


_OBSERVED: dict[type[Method], type[Method]] = {}


def _observed_class(cls: type[Method]) -> type[Method]:
    if issubclass(cls, _Observed):
        return cls
    if cls not in _OBSERVED:
        _OBSERVED[cls] = type(f"Observed{cls.__name__}", (_Observed, cls), {"__module__": __name__})
    return _OBSERVED[cls]


def observe(method: Method, hooks: MethodHooks) -> Method:
    """``method`` (the same object), its ``outgoing`` run through ``hooks.filters`` in order
    and its merges logged to ``hooks.merge_log``."""
    method.__class__ = _observed_class(type(method))
    cast(_Observed, method).sim_hooks = hooks
    return method
