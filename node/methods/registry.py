"""The registry of gossip methods: the one list that config, scenario, CLIs and tests read.

Each ``MethodSpec`` says what a method is called, where its class lives (imported on first
use, so ``spargo --help`` stays light), its option defaults, one line of help and three
facts the rest of the system needs: whether each peer ends with its own model
(``personalised``: the local basis is its natural headline, though summaries report both and
rank on the one the run declares), whether it keeps per-neighbour state
(``fixed_neighbours``: no membership-sampled graph), and whether only the simulator can run
it (``simulation_only``). Adding a method is one module plus one entry in ``_SPECS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spargo.node.methods.base import Method

__all__ = [
    "METHODS",
    "MethodSpec",
    "method_help",
    "method_spec",
    "node_methods",
    "registered",
    "sim_methods",
]


@dataclass(frozen=True)
class MethodSpec:
    """One method: ``target`` is ``"module:Class"``; ``defaults`` its options (each value
    fixes the option's type)."""

    name: str
    target: str
    help: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    personalised: bool = False
    fixed_neighbours: bool = False
    simulation_only: bool = False
    #: Correct over one-way links (column-stochastic mixing, docs/algorithms.md §4.6); the
    #: others need every link to work both ways (symmetric weights).
    one_way_links: bool = False

    def load(self) -> type[Method]:
        """The method class (imports its module)."""
        module, _, attr = self.target.partition(":")
        cls: type[Method] = getattr(importlib.import_module(module), attr)
        return cls


_DENSE = {"robust": "none", "staleness_gamma": 0.5, "mix": "mh"}
_M = "spargo.node.methods."

_SPECS = (
    MethodSpec(
        "dense",
        _M + "dense:DenseMethod",
        "D-PSGD, Metropolis–Hastings mix",
        _DENSE,
    ),
    MethodSpec(
        "vc",
        _M + "vc:VarianceCorrectedMethod",
        "D-PSGD with variance correction",
        {**_DENSE, "beta": 0.5, "exact": False},
    ),
    MethodSpec(
        "pushsum",
        _M + "pushsum:PushSumMethod",
        "push-sum, exact over one-way links",
        one_way_links=True,
    ),
    MethodSpec(
        "pushsum_rs",
        _M + "pushsum:RunningSumsMethod",
        "push-sum with running sums, robust to loss",
        one_way_links=True,
    ),
    MethodSpec(
        "spafl",
        _M + "spafl:SpaFLMethod",
        "SpaFL thresholds, personalised",
        {
            "alpha": 0.01,
            "warmup": 1,
            "mask_head": False,
            "min_density": 0.01,
            "weights_every": 0,
            "final_merge": True,
            "vc": True,
            "beta": 0.5,
            "staleness_gamma": 0.5,
        },
        personalised=True,
    ),
    MethodSpec(
        "fedsparsify",
        _M + "fedsparsify:FedSparsifyMethod",
        "progressive magnitude pruning",
        {
            "schedule": "cubic",
            "prune_rate": 0.1,
            "s_final": 0.8,
            "t0": -1,
            "t_end": 0,
            "every": 1,
            "include_head": False,
            "scope": "global",
            "staleness_gamma": 0.5,
        },
    ),
    MethodSpec(
        "choco",
        _M + "choco:ChocoMethod",
        "CHOCO-SGD, compressed deltas",
        {
            "compressor": "topk",
            "ratio": 0.1,
            "value_dtype": "float16",
            "gamma": "auto",
            "resync_after": 3,
        },
        fixed_neighbours=True,
    ),
    MethodSpec(
        "tracking",
        _M + "tracking:TrackingMethod",
        "gradient tracking with local steps, K-GT",
        {**_DENSE, "forget": 0.02},
    ),
    MethodSpec(
        "cgt",
        _M + "cgt:CompressedTrackingMethod",
        "compressed gradient tracking, BEER-style",
        {
            "compressor": "energy",
            "ratio": 0.19,
            "value_dtype": "int8",
            "gamma": 0.6,
            "resync_after": 3,
            "forget": 0.02,
        },
        fixed_neighbours=True,
    ),
    MethodSpec(
        "cgt_masked",
        _M + "cgt_masked:MaskedCompressedTrackingMethod",
        "cgt on a pruned model, top-k inside the mask",
        {
            "compressor": "energy",
            "ratio": 0.19,
            "value_dtype": "int8",
            "gamma": 0.8,
            "resync_after": 3,
            "forget": 0.02,
            "s_final": 0.8,
            "t0": -1,
            "t_end": 0,
            "include_head": False,
        },
        fixed_neighbours=True,
    ),
    MethodSpec(
        "allreduce",
        "spargo.sims.allreduce:AllReduceMethod",
        "exact average each round, a reference",
        {"weighting": "equal"},
        simulation_only=True,
        one_way_links=True,  # it ignores the graph
    ),
    MethodSpec(
        "local",
        _M + "local:LocalMethod",
        "no communication, every peer alone, a reference",
        personalised=True,
        one_way_links=True,  # it uses no link
    ),
)

#: name → spec, in listing order.
METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}


def method_spec(name: str) -> MethodSpec:
    """The spec of ``name``; ValueError naming the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method {name!r} is unknown; use one of {', '.join(METHODS)}") from None


def method_help(*, simulator: bool = True) -> str:
    """``name (help)`` of every method (the simulator's, or a real peer's), for ``--help``."""
    names = sim_methods() if simulator else node_methods()
    return "; ".join(f"{name} ({METHODS[name].help})" for name in names)


def node_methods() -> tuple[str, ...]:
    """Methods a real peer can run (``spargo peer``)."""
    return tuple(n for n, s in METHODS.items() if not s.simulation_only)


def sim_methods() -> tuple[str, ...]:
    """Methods the simulator can run (all of them)."""
    return tuple(METHODS)


@contextmanager
def registered(spec: MethodSpec) -> Iterator[MethodSpec]:
    """Add ``spec`` for the duration of a ``with`` block (tests, plug-ins under trial)."""
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    try:
        yield spec
    finally:
        del METHODS[spec.name]
