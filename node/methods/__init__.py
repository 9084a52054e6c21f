"""Gossip methods: what a peer sends and how it merges (strategy objects)."""

from __future__ import annotations

from spargo.node.methods.base import Method, MethodContext, mixing_row
from spargo.node.methods.dense import DenseMethod
from spargo.node.methods.vc import VarianceCorrectedMethod

__all__ = [
    "DenseMethod",
    "Method",
    "MethodContext",
    "VarianceCorrectedMethod",
    "make_method",
    "method_names",
    "mixing_row",
]


def _registry() -> dict[str, type[Method]]:
    from spargo.node.methods.choco import ChocoMethod
    from spargo.node.methods.fedsparsify import FedSparsifyMethod
    from spargo.node.methods.spafl import SpaFLMethod

    return {
        "dense": DenseMethod,
        "vc": VarianceCorrectedMethod,
        "spafl": SpaFLMethod,
        "fedsparsify": FedSparsifyMethod,
        "choco": ChocoMethod,
    }


def method_names() -> list[str]:
    """The names ``make_method`` accepts."""
    return sorted(_registry())


def make_method(name: str, ctx: MethodContext) -> Method:
    """Build the method called ``name`` (see ``node.config.METHODS``) with ``ctx.options``."""
    registry = _registry()
    try:
        cls = registry[name]
    except KeyError:
        raise ValueError(
            f"method {name!r} is not available; use one of {', '.join(sorted(registry))}"
        ) from None
    return cls(ctx)
