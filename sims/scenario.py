"""``Scenario``: one simulated experiment, from flags or a TOML file, checked on construction.

Besides the learning setup (peers, topology, method, data) a scenario describes the faults
injected into the run: link latency/jitter/bandwidth/loss, a network partition that splits
and heals, node churn (by a rate or an explicit schedule), heterogeneous device speeds and a
fraction of misbehaving peers. ``mode`` picks lock-step rounds or the asynchronous mode
(training and gossip on each peer's own clocks, merges on arrival, staleness-weighted).
Every random choice derives from ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from spargo.node.config import METHODS, MODES

SIM_METHODS = (*METHODS, "allreduce", "local")
ENGINES = ("node", "batched")
CHURN_ACTIONS = ("leave", "fail")
CHURN_MODES = (*CHURN_ACTIONS, "mixed")
SIM_MODES = MODES
ATTACKS = ("scale:K", "signflip", "random", "nan", "replay")


class ScenarioError(ValueError):
    """A scenario value is wrong; the message says what to change."""


@dataclass(frozen=True)
class ChurnEvent:
    """Peer number ``peer`` goes down when it reaches ``round`` and is back ``downtime`` later.

    ``leave`` is a graceful stop (Bye, checkpoint); ``fail`` an abrupt crash. ``downtime`` 0
    means the peer never comes back.
    """

    peer: int
    round: int
    action: str = "fail"
    downtime: int = 3

    def __post_init__(self) -> None:
        if self.action not in CHURN_ACTIONS:
            raise ScenarioError(f"churn action {self.action!r} is unknown; use leave or fail")
        if self.peer < 0 or self.round < 1 or self.downtime < 0:
            raise ScenarioError(
                "a churn event needs peer >= 0, round >= 1 and downtime >= 0 "
                f"(got peer={self.peer}, round={self.round}, downtime={self.downtime})"
            )


#: The default run gossips SpaFL thresholds every round and masked weights every third round.
DEFAULT_SPAFL_OPTIONS: Mapping[str, Any] = MappingProxyType({"weights_every": 3})
_UNSET_OPTIONS: Mapping[str, Any] = MappingProxyType({})


def default_method_options(method: str) -> dict[str, Any]:
    """The options a scenario uses for ``method`` when none are given."""
    return dict(DEFAULT_SPAFL_OPTIONS) if method == "spafl" else {}


def accuracy_basis(method: str) -> str:
    """``local`` for personalised methods (SpaFL: each peer on its own test split), else
    ``global`` (each peer's model on the shared held-out test set)."""
    return "local" if method == "spafl" else "global"


@dataclass(frozen=True)
class Scenario:
    """Everything that defines a simulation run (see ``sims.run``)."""

    nodes: int = 16
    topology: str = "smallworld"
    method: str = "spafl"
    #: Left unset, the method's defaults — and for ``spafl`` the default run's
    #: ``weights_every = 3`` (thresholds every round, masked weights every third).
    method_options: Mapping[str, Any] = field(default_factory=lambda: _UNSET_OPTIONS)
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
    # --- timing mode ------------------------------------------------------------------
    #: ``rounds``: lock-step rounds with a deadline; ``async``: every peer trains and gossips
    #: on its own clocks and merges messages as they arrive (its "round" is its count of
    #: local training bursts; ``rounds`` bursts each, then it leaves).
    mode: str = "rounds"
    #: Async mode: idle seconds after each training burst (on top of its compute time) ...
    train_period_s: float = 1.0
    #: ... and seconds between two gossip sends.
    gossip_period_s: float = 1.0
    #: Async mode: exponential waits with those means (independent Poisson clocks, DADAO).
    poisson: bool = False
    #: Messages more than this many rounds older than the receiver's round are dropped
    #: (async mode down-weights the rest by staleness).
    max_staleness: int = 5
    #: Async mode: stop every peer at this simulated time, so fast devices do more bursts
    #: than slow ones (``rounds`` then only caps them); 0 = each peer stops after ``rounds``.
    duration_s: float = 0.0
    #: A short name for reports (the output folder); empty = derived from the settings.
    name: str = ""
    # --- links (defaults; a graph file's edge attributes override them per edge) --------
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    #: 0 means unlimited.
    bandwidth_mbps: float = 0.0
    loss: float = 0.0
    # --- partition: split at round ``partition_at[0]``, heal at ``partition_at[1]`` ------
    partition_at: tuple[int, int] | None = None
    #: Peer numbers of each side; empty = a seeded bisection of the graph.
    partition_groups: tuple[tuple[int, ...], ...] = ()
    # --- churn -----------------------------------------------------------------------
    #: Per peer and round, the probability of going down (for ``churn_downtime`` rounds).
    churn: float = 0.0
    churn_mode: str = "mixed"
    churn_downtime: int = 3
    churn_events: tuple[ChurnEvent, ...] = ()
    # --- devices ------------------------------------------------------------------------
    #: Simulated compute time of one local step (virtual seconds) ...
    step_time_s: float = 0.0
    #: ... times a per-peer factor exp(N(0, speed_spread²)): heterogeneous devices.
    speed_spread: float = 0.0
    # --- attacks -------------------------------------------------------------------------
    attack: str | None = None
    attackers: float = 0.0
    #: Compute the consensus distance every round (costs one parameter copy per peer).
    consensus: bool = True
    # --- engine ------------------------------------------------------------------------
    engine: str = field(
        default="node",
        metadata={"help": "node (a real Node per peer, the reference) or batched (all peers "
                  "as one tensor program: rounds mode, no faults, MLP tasks)"},
    )  # fmt: skip
    eval_peers: int = field(
        default=0,
        metadata={"help": "batched engine: evaluate a seeded sample of K peers on each "
                  "evaluation round (0 = every peer)"},
    )  # fmt: skip
    eval_all_every: int = field(
        default=0,
        metadata={"help": "batched engine with --eval-peers: evaluate every peer every K "
                  "rounds and in the last round (0 = the sample only)"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        options = self.method_options
        if options is _UNSET_OPTIONS:
            options = default_method_options(self.method)
        object.__setattr__(self, "method_options", MappingProxyType(dict(options)))
        object.__setattr__(self, "partition_at", _rounds_pair(self.partition_at))
        object.__setattr__(
            self, "partition_groups", tuple(tuple(int(p) for p in g) for g in self.partition_groups)
        )
        object.__setattr__(self, "churn_events", tuple(_event(e) for e in self.churn_events))
        self._check_learning()
        self._check_faults()
        if self.engine == "batched":
            from spargo.sims.batched import check_batched

            check_batched(self)

    def _check_learning(self) -> None:
        for name, low in (("nodes", 2), ("rounds", 1), ("local_steps", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ScenarioError(
                    f"--{_flag(name)} must be a whole number >= {low}, got {value!r}"
                )
        if self.method not in SIM_METHODS:
            raise ScenarioError(
                f"--method {self.method!r} is unknown; use one of {', '.join(SIM_METHODS)}"
            )
        _positive("lr", self.lr)
        _positive("round-deadline-s", self.round_deadline_s)
        if not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ScenarioError("--eval-every must be at least 1")
        self._check_mode()
        self._check_engine()

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise ScenarioError(f"--engine {self.engine!r} is unknown; use node or batched")
        for name in ("eval_peers", "eval_all_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ScenarioError(f"--{_flag(name)} must be a whole number >= 0, got {value!r}")
        if self.eval_all_every and not self.eval_peers:
            raise ScenarioError("--eval-all-every needs --eval-peers K (a sample between them)")
        if self.engine == "node":
            for name, used in (
                ("method local", self.method == "local"),
                ("eval-peers", self.eval_peers),
                ("eval-all-every", self.eval_all_every),
            ):
                if used:
                    raise ScenarioError(f"--{name} needs --engine batched")

    def _check_mode(self) -> None:
        if self.mode not in SIM_MODES:
            raise ScenarioError(f"--mode {self.mode!r} is unknown; use rounds or async")
        for name in ("train_period_s", "gossip_period_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ScenarioError(
                    f"--{_flag(name)} must be a positive number of seconds, got {value!r}"
                )
        value = self.max_staleness
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ScenarioError(f"--max-staleness must be a whole number >= 0, got {value!r}")
        duration = self.duration_s
        if not isinstance(duration, int | float) or not 0 <= duration < math.inf:
            raise ScenarioError(f"--duration-s must be a number of seconds >= 0, got {duration!r}")
        if duration > 0 and self.mode != "async":
            raise ScenarioError("--duration-s needs --mode async (rounds mode stops by rounds)")
        if self.mode == "async" and self.method == "allreduce":
            raise ScenarioError(
                "--method allreduce is a lock-step reference; use it with --mode rounds"
            )

    def _check_faults(self) -> None:
        for name in ("latency_ms", "jitter_ms", "bandwidth_mbps", "step_time_s", "speed_spread"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value >= 0:
                raise ScenarioError(f"--{_flag(name)} must be a number >= 0, got {value!r}")
        for name in ("loss", "churn", "attackers"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < 1:
                raise ScenarioError(f"--{_flag(name)} must be in [0, 1), got {value!r}")
        if self.partition_at is not None and not 1 <= self.partition_at[0] < self.partition_at[1]:
            raise ScenarioError(
                f"--partition-at {self.partition_at[0]}:{self.partition_at[1]} must be "
                "ROUND:HEAL_ROUND with 1 <= ROUND < HEAL_ROUND"
            )
        grouped = [p for g in self.partition_groups for p in g]
        if any(not 0 <= p < self.nodes for p in grouped) or len(set(grouped)) != len(grouped):
            raise ScenarioError("partition_groups must list distinct peer numbers 0..nodes-1")
        if self.churn_mode not in CHURN_MODES:
            raise ScenarioError(f"--churn-mode must be one of {', '.join(CHURN_MODES)}")
        if not isinstance(self.churn_downtime, int) or self.churn_downtime < 0:
            raise ScenarioError("--churn-downtime must be a whole number of rounds >= 0")
        if any(e.peer >= self.nodes for e in self.churn_events):
            raise ScenarioError("a churn event names a peer number >= nodes")
        if self.attack is not None:
            from spargo.sims.attacks import parse_attack

            parse_attack(self.attack)
            if self.attackers == 0:
                raise ScenarioError("--attack needs --attackers FRACTION > 0 (e.g. 0.25)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (what ``summary.json`` records as the scenario)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["method_options"] = dict(self.method_options)
        out["churn_events"] = [asdict(e) for e in self.churn_events]
        return out

    @property
    def label(self) -> str:
        """The name, or ``method-topology[-async]-seed`` when none was given."""
        mode = "-async" if self.mode == "async" else ""
        return self.name or f"{self.method}-{slug(self.topology)}{mode}-s{self.seed}"


def _flag(name: str) -> str:
    return name.replace("_", "-")


def slug(text: str) -> str:
    """``text`` (a path's last part) with every non-alphanumeric character as ``_``."""
    return "".join(c if c.isalnum() else "_" for c in text.rsplit("/", 1)[-1])


def _positive(name: str, value: object) -> None:
    if not isinstance(value, int | float) or not value > 0:
        raise ScenarioError(f"--{name} must be a positive number, got {value!r}")


def _rounds_pair(value: object) -> tuple[int, int] | None:
    """Accept ``"R:H"`` or ``[R, H]``; anything else is an error with the expected form."""
    if value is None:
        return None
    parts: Sequence[object]
    if isinstance(value, str):
        parts = value.split(":")
    elif isinstance(value, list | tuple):
        parts = value
    else:
        parts = ()
    try:
        if len(parts) != 2:
            raise ValueError
        return int(str(parts[0])), int(str(parts[1]))
    except ValueError:
        raise ScenarioError(
            f"--partition-at {value!r} must look like ROUND:HEAL_ROUND (e.g. 10:20)"
        ) from None


def _event(value: object) -> ChurnEvent:
    if isinstance(value, ChurnEvent):
        return value
    if not isinstance(value, Mapping):
        raise ScenarioError(
            "churn_events must be tables like {peer = 3, round = 5, action = 'fail'}"
        )
    try:
        return ChurnEvent(**dict(value))
    except TypeError as exc:
        raise ScenarioError(f"churn event {dict(value)}: {exc}") from None


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


def shipped_scenarios() -> dict[str, Path]:
    """The scenarios shipped inside the package (``sims/scenarios/*.toml``), by name.

    They are package data, so ``spargo sim --scenario NAME`` works from an installed wheel in
    any directory, not only inside a checkout.
    """
    from importlib.resources import as_file, files

    folder = files("spargo.sims") / "scenarios"
    with as_file(folder) as path:
        return {p.stem: p for p in sorted(Path(path).glob("*.toml"))}


def shipped_scenario(name: str) -> Path:
    """The file of the shipped scenario ``name``; a ``ValueError`` lists the names otherwise."""
    known = shipped_scenarios()
    if name not in known:
        raise ValueError(
            f"--scenario {name!r} is not a shipped scenario; choose one of "
            f"{', '.join(known)} (or --scenario list)"
        )
    return known[name]
