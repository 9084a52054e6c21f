"""Gossip methods: what a peer sends and how it merges (strategy objects)."""

from __future__ import annotations

from node.methods.base import Method, MethodContext, mixing_row
from node.methods.dense import DenseMethod

__all__ = ["DenseMethod", "Method", "MethodContext", "make_method", "mixing_row"]


def make_method(name: str, ctx: MethodContext) -> Method:
    """Build the method called ``name`` (see ``node.config.METHODS``)."""
    registry: dict[str, type[Method]] = {"dense": DenseMethod}
    try:
        cls = registry[name]
    except KeyError:
        raise ValueError(
            f"method {name!r} is not available; use one of {', '.join(sorted(registry))}"
        ) from None
    return cls(ctx)
