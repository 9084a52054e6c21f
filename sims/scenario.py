"""``Scenario``: one simulated experiment, from flags or a TOML file, checked on construction.

Besides the learning setup (peers, topology, method, data) a scenario describes the faults
injected into the run: link latency/jitter/bandwidth/loss, a network partition that splits
and heals, node churn (by a rate or an explicit schedule), heterogeneous device speeds and a
fraction of misbehaving peers. Those flat fields describe fault objects (``sims.faults``;
``Scenario.fault_list()`` builds them), and ``faults`` adds any others from Python (an
equivocating attacker, say). ``mode`` picks lock-step rounds or the asynchronous mode
(training and gossip on each peer's own clocks, merges on arrival, staleness-weighted).
Every random choice derives from ``seed``. Round numbers are 0-based, as in every file.

Each field's metadata holds its ``spargo sim`` flag's help (``sims.flags`` builds the flags).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spargo.sims.faults import Fault

from spargo.node.config import MAX_GOSSIP_STEPS
from spargo.node.methods.registry import method_help
from spargo.sims.scenario_checks import CHURN_ACTIONS, check_scenario
from spargo.sims.scenario_checks import ScenarioError as ScenarioError  # its public home

ATTACKS = ("scale:K", "signflip", "random", "nan", "replay", "equivocate")


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


#: The default run gossips SpaFL thresholds every round and masked weights every second round.
DEFAULT_SPAFL_OPTIONS: Mapping[str, Any] = MappingProxyType({"weights_every": 2})
_UNSET_OPTIONS: Mapping[str, Any] = MappingProxyType({})


def default_method_options(method: str) -> dict[str, Any]:
    """The options a scenario uses for ``method`` when none are given."""
    return dict(DEFAULT_SPAFL_OPTIONS) if method == "spafl" else {}


def accuracy_basis(scenario: Scenario) -> str:
    """The basis a run's headline accuracy, rankings and comparisons use: the scenario's
    declared ``basis`` (global by default, for every method: one basis for all)."""
    return scenario.basis


def _arg(default: Any, help: str, group: str = "run", **cli: Any) -> Any:
    """A scenario field whose ``metadata`` describes its ``spargo sim`` flag (see
    ``sims.cli``): ``help``, ``group`` and optional ``metavar``, ``kind`` (how the flag's text
    becomes the value: ``pair``, ``groups``, ``event``, ``options``) or ``cli=False``."""
    meta = {"help": help, "group": group, **cli}
    if isinstance(default, Mapping | tuple) and not isinstance(default, str):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Scenario:
    """Everything that defines a simulation run (see ``sims.run``).

    Each field's metadata carries its ``spargo sim`` flag's help, so the CLI has one flag
    per field (``--round-deadline-s`` for ``round_deadline_s``) and no field lacks one.
    """

    nodes: int = _arg(16, "number of peers (default 16)")
    topology: str = _arg("smallworld", "ring, smallworld, regular:4, er:0.2, ... or a graph file")
    method: str = _arg("spafl", "gossip method: " + method_help())
    #: Left unset, the method's defaults — and for ``spafl`` the default run's
    #: ``weights_every = 2`` (thresholds every round, masked weights every second;
    #: the best measured setting, ``benchmarks/default_run.py``).
    method_options: Mapping[str, Any] = _arg(
        _UNSET_OPTIONS,
        "method option, repeatable (e.g. --option weights_every=3)",
        flag="--option",
        kind="options",
        metavar="KEY=VALUE",
    )
    rounds: int = _arg(30, "gossip rounds (async: training bursts per peer)")
    local_steps: int = _arg(10, "local SGD steps per round")
    batch_size: int = _arg(32, "samples per local SGD step")
    lr: float = _arg(0.05, "learning rate (0: consensus only, no training)")
    momentum: float = _arg(0.9, "SGD momentum")
    task: str = _arg("digits", "digits, synthetic, mnist:PATH or module:function")
    partition: str = _arg("dirichlet:0.5", "iid, dirichlet:ALPHA, shards:K")
    sampler: str = _arg("all", "all, random:K, exponential")
    #: The graph file's format; None = detected from its content and extension.
    topology_format: str | None = _arg(
        None,
        "graph file format: edgelist, csv, adjlist, gml, gexf, pajek, graphml, json, mtx "
        "(default: detected)",
        flag="--format",
        metavar="NAME",
    )
    #: Read the graph file as arcs and gossip along them (files that say directed are).
    directed: bool = _arg(
        False, "read the graph file as arcs; gossip follows them (push-sum for one-way arcs)"
    )
    #: ``geo[:KM_PER_MS]``: each link's latency = ``latency_ms`` + great-circle km / KM_PER_MS
    #: (default 200, light in fibre) from the nodes' latitude/longitude; None = off.
    latency_from: str | None = _arg(
        None,
        "link latency from node coordinates (200 km/ms; --latency-ms is the base)",
        metavar="geo[:KM_PER_MS]",
    )
    seed: int = _arg(0, "seed of every random choice")
    #: Summaries report both bases; this one is the headline and what rankings compare.
    basis: str = _arg("global", "headline accuracy: global (shared test set) or local (own split)")
    distinct_init: bool = _arg(False, "start every peer from its own random model")
    eval_every: int = _arg(1, "evaluate every K rounds")
    round_deadline_s: float = _arg(30.0, "rounds: seconds a peer waits for its neighbours")
    #: Q gossip exchanges per round (DFedSAM's multi-gossip; docs/algorithms.md §4.10).
    gossip_steps: int = _arg(
        1,
        f"rounds, node engine: gossip exchanges per round, 1..{MAX_GOSSIP_STEPS} (each costs a "
        "round's bytes)",
    )
    #: ``rounds``: lock-step rounds with a deadline; ``async``: every peer trains and gossips
    #: on its own clocks and merges messages as they arrive (its "round" is its count of
    #: local training bursts; ``rounds`` bursts each, then it leaves).
    mode: str = _arg(
        "rounds", "rounds (lock-step, default) or async (own clocks, merge on arrival)", "timing"
    )
    train_period_s: float = _arg(1.0, "async: idle seconds after each training burst", "timing")
    gossip_period_s: float = _arg(1.0, "async: seconds between gossip sends", "timing")
    #: Async mode: exponential waits with those means (independent Poisson clocks, DADAO).
    poisson: bool = _arg(
        False, "async: exponential waits (Poisson clocks) instead of fixed periods", "timing"
    )
    #: Async mode down-weights the messages it keeps by staleness.
    max_staleness: int = _arg(5, "drop messages more than this many rounds old", "timing")
    #: Fast devices do more bursts than slow ones (``rounds`` then only caps them).
    duration_s: float = _arg(
        0.0, "async: stop every peer at this simulated time (0 = after --rounds)", "timing"
    )
    name: str = _arg("", "run name (the output folder under runs/)", metavar="NAME")
    # --- links (defaults; a graph file's edge attributes override them per edge) --------
    latency_ms: float = _arg(0.0, "link latency in ms", "faults")
    jitter_ms: float = _arg(0.0, "extra uniform delay 0..J ms per message", "faults")
    bandwidth_mbps: float = _arg(0.0, "link bandwidth in Mbit/s (0 = unlimited)", "faults")
    loss: float = _arg(0.0, "message loss probability in [0, 1)", "faults")
    partition_at: tuple[int, int] | None = _arg(
        None, "split the network, then heal it", "faults", kind="pair", metavar="ROUND:HEAL_ROUND"
    )
    partition_groups: tuple[tuple[int, ...], ...] = _arg(
        (), "peer numbers of each side (default: a seeded bisection)", "faults",
        kind="groups", metavar="0,1,2/3,4,5",
    )  # fmt: skip
    churn: float = _arg(0.0, "per peer and round probability of going down", "faults")
    churn_mode: str = _arg("mixed", "leave (graceful), fail (crash) or mixed", "faults")
    churn_downtime: int = _arg(3, "rounds a churned peer stays away", "faults")
    churn_events: tuple[ChurnEvent, ...] = _arg(
        (), "one planned churn event, repeatable", "faults",
        kind="event", metavar="PEER:ROUND[:ACTION[:DOWNTIME]]",
    )  # fmt: skip
    step_time_s: float = _arg(0.0, "simulated compute seconds per local step", "faults")
    speed_spread: float = _arg(0.0, "device speeds: step time × exp(N(0, spread²))", "faults")
    attack: str | None = _arg(None, ", ".join(ATTACKS), "faults")
    attackers: float = _arg(0.0, "fraction of misbehaving peers", "faults")
    consensus: bool = _arg(True, "compute the consensus distance every round")
    #: Further fault objects (``sims.faults``), applied after those the fields above describe.
    faults: tuple[Fault, ...] = _arg((), "Python API only", cli=False)
    engine: str = _arg(
        "node",
        "node (a real Node per peer, the reference) or batched (all peers as one tensor "
        "program: rounds mode, MLP tasks; loss, partitions, churn and speeds as masks)",
    )
    eval_peers: int = _arg(
        0,
        "batched engine: evaluate a seeded sample of K peers on each evaluation round "
        "(0 = every peer)",
    )
    eval_all_every: int = _arg(
        0,
        "batched engine with --eval-peers: evaluate every peer every K rounds and in the "
        "last round (0 = the sample only)",
    )
    device: str = _arg(
        "cpu", "batched engine: torch device, cpu, cuda or cuda:N (default cpu)", metavar="DEV"
    )

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
        object.__setattr__(self, "faults", _faults(self.faults))
        check_scenario(self)
        if self.engine == "batched":
            from spargo.sims.batched import check_batched

            check_batched(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (what ``summary.json`` records as the scenario)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["method_options"] = dict(self.method_options)
        out["churn_events"] = [asdict(e) for e in self.churn_events]
        out["faults"] = [repr(f) for f in self.faults]
        return out

    def fault_list(self) -> list[Fault]:
        """Every fault of the run: those the fields describe, then ``faults``."""
        from spargo.sims.faults import scenario_faults

        return [*scenario_faults(self), *self.faults]

    @property
    def label(self) -> str:
        """The name, or ``method-topology[-async]-seed`` when none was given."""
        mode = "-async" if self.mode == "async" else ""
        return self.name or f"{self.method}-{slug(self.topology)}{mode}-s{self.seed}"


def slug(text: str) -> str:
    """``text`` (a path's last part) with every non-alphanumeric character as ``_``."""
    return "".join(c if c.isalnum() else "_" for c in text.rsplit("/", 1)[-1])


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


def _faults(value: object) -> tuple[Fault, ...]:
    if not value:
        return ()
    from spargo.sims.faults import Fault

    items = tuple(value) if isinstance(value, list | tuple) else (value,)
    for item in items:
        if not isinstance(item, Fault):
            raise ScenarioError(
                f"faults must be fault objects from spargo.sims.faults, got {item!r} "
                "(files and flags use the flat keys: loss, churn, partition_at, attack, ...)"
            )
    return items


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
