"""Gossip methods: what a peer sends and how it merges (strategy objects over payloads).

The registry (``node.methods.registry``) is the one list of methods; ``make_method`` builds
one by name. Importing this package stays light (no torch) until a method is built, so the
config and the CLIs can read the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spargo.node.methods.registry import METHODS, MethodSpec, method_spec, node_methods

if TYPE_CHECKING:
    from spargo.node.methods.base import Method, MethodContext, mixing_row

__all__ = [
    "METHODS",
    "Method",
    "MethodContext",
    "MethodSpec",
    "make_method",
    "method_names",
    "method_spec",
    "mixing_row",
]

_FROM_BASE = ("Method", "MethodContext", "mixing_row")


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        from spargo.node.methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def method_names() -> list[str]:
    """The names ``make_method`` accepts (every registered method a peer can run alone)."""
    return list(node_methods())


def make_method(name: str, ctx: MethodContext) -> Method:
    """Build the method called ``name`` with ``ctx.options`` (ValueError naming the valid
    ones when it is unknown or needs the simulator)."""
    spec = method_spec(name)
    if spec.simulation_only:
        raise ValueError(f"method {name!r} runs only in the simulator (spargo sim)")
    return spec.load()(ctx)
