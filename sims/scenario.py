"""``Scenario``: one simulated experiment, from flags or a TOML file, checked on construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from node.config import METHODS

SIM_METHODS = (*METHODS, "allreduce")


class ScenarioError(ValueError):
    """A scenario value is wrong; the message says what to change."""


@dataclass(frozen=True)
class Scenario:
    """Everything that defines a simulation run."""

    nodes: int = 16
    topology: str = "smallworld"
    method: str = "spafl"
    method_options: Mapping[str, Any] = field(
        default_factory=lambda: {"weights_every": 3, "alpha": 0.002}
    )
    rounds: int = 30
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    task: str = "digits"
    partition: str = "dirichlet:0.5"
    sampler: str = "all"
    seed: int = 0
    #: Give each peer its own initial model (the vanishing-variance setting).
    distinct_init: bool = False
    eval_every: int = 1
    round_deadline_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "method_options", MappingProxyType(dict(self.method_options)))
        if not isinstance(self.nodes, int) or self.nodes < 2:
            raise ScenarioError(f"--nodes must be at least 2, got {self.nodes!r}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ScenarioError(f"--rounds must be at least 1, got {self.rounds!r}")
        if not isinstance(self.local_steps, int) or self.local_steps < 1:
            raise ScenarioError(f"--local-steps must be at least 1, got {self.local_steps!r}")
        if self.method not in SIM_METHODS:
            raise ScenarioError(
                f"--method {self.method!r} is unknown; use one of {', '.join(SIM_METHODS)}"
            )
        if not self.lr > 0:
            raise ScenarioError(f"--lr must be positive, got {self.lr!r}")
        if self.eval_every < 1:
            raise ScenarioError("--eval-every must be at least 1")


def scenario_from_mapping(data: Mapping[str, Any], source: str = "scenario") -> Scenario:
    """Build a ``Scenario`` from a mapping (a TOML file's top-level table)."""
    known = {f.name for f in fields(Scenario)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(
            f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
        )
    try:
        return Scenario(**dict(data))
    except TypeError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
