"""What a ``Scenario`` may hold: its checks, each wrong value one ``ScenarioError`` line.

``sims.scenario`` builds a scenario and calls ``check_scenario``; the vocabulary the checks
share (engines, modes, accuracy bases, churn actions) lives here with them. Each message names
the ``spargo sim`` flag and the valid range.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from spargo.node.config import MAX_GOSSIP_STEPS, MODES
from spargo.node.methods.registry import sim_methods

if TYPE_CHECKING:
    from spargo.sims.scenario import Scenario

ENGINES = ("node", "batched")
CHURN_ACTIONS = ("leave", "fail")
CHURN_MODES = (*CHURN_ACTIONS, "mixed")
SIM_MODES = MODES
#: Accuracy bases: ``global`` (each peer's model on the shared held-out test set) or
#: ``local`` (each peer's model on its own test split, SpaFL's headline).
BASES = ("global", "local")


class ScenarioError(ValueError):
    """A scenario value is wrong; the message says what to change."""


def flag_name(name: str) -> str:
    """The ``spargo sim`` flag of field ``name`` (without the dashes)."""
    return name.replace("_", "-")


def positive(name: str, value: object) -> None:
    """``ScenarioError`` unless ``value`` is a number > 0 (``name``: the flag)."""
    if not isinstance(value, int | float) or not value > 0:
        raise ScenarioError(f"--{name} must be a positive number, got {value!r}")


def check_scenario(s: Scenario) -> None:
    """Every check of a built scenario (its values already normalised)."""
    check_learning(s)
    check_faults(s)
    check_graph_options(s)


def check_graph_options(s: Scenario) -> None:
    """A graph file's ``--format`` and ``--latency-from`` (parsed by ``spargo.topology``)."""
    from spargo import topology

    if s.topology_format is not None and s.topology_format not in topology.FORMATS:
        raise ScenarioError(
            f"--format {s.topology_format!r} is unknown; use one of {', '.join(topology.FORMATS)}"
        )
    if s.latency_from is not None:
        topology.parse_latency_from(s.latency_from)


def check_learning(s: Scenario) -> None:
    """Sizes, method, learning rate, basis and evaluation; then mode and engine."""
    for name, low in (("nodes", 2), ("rounds", 1), ("local_steps", 1), ("batch_size", 1)):
        value = getattr(s, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ScenarioError(
                f"--{flag_name(name)} must be a whole number >= {low}, got {value!r}"
            )
    if s.method not in sim_methods():
        raise ScenarioError(
            f"--method {s.method!r} is unknown; use one of {', '.join(sim_methods())}"
        )
    if not isinstance(s.lr, int | float) or not 0 <= s.lr < math.inf:
        raise ScenarioError(f"--lr must be a number >= 0 (0: no training), got {s.lr!r}")
    if s.basis not in BASES:
        raise ScenarioError(f"--basis {s.basis!r} is unknown; use global or local")
    positive("round-deadline-s", s.round_deadline_s)
    if not isinstance(s.eval_every, int) or s.eval_every < 1:
        raise ScenarioError("--eval-every must be at least 1")
    check_mode(s)
    check_engine(s)


def check_engine(s: Scenario) -> None:
    """``--engine``, the batched engine's evaluation sampling, gossip steps, ``--device``."""
    if s.engine not in ENGINES:
        raise ScenarioError(f"--engine {s.engine!r} is unknown; use node or batched")
    for name in ("eval_peers", "eval_all_every"):
        value = getattr(s, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ScenarioError(f"--{flag_name(name)} must be a whole number >= 0, got {value!r}")
    if s.eval_all_every and not s.eval_peers:
        raise ScenarioError("--eval-all-every needs --eval-peers K (a sample between them)")
    check_gossip_steps(s)
    if s.engine == "node":
        for name, used in (
            ("eval-peers", s.eval_peers),
            ("eval-all-every", s.eval_all_every),
        ):
            if used:
                raise ScenarioError(f"--{name} needs --engine batched")
    if s.device != "cpu":  # cuda, cuda:N or a mistake: no torch import for cpu
        from spargo.sims.batched_check import check_device

        check_device(s.device, s.engine)


def check_gossip_steps(s: Scenario) -> None:
    """``--gossip-steps`` in 1..MAX_GOSSIP_STEPS; above 1 only where it means something."""
    q = s.gossip_steps
    if not isinstance(q, int) or isinstance(q, bool) or not 1 <= q <= MAX_GOSSIP_STEPS:
        raise ScenarioError(
            f"--gossip-steps must be a whole number in 1..{MAX_GOSSIP_STEPS}, got {q!r}"
        )
    if q == 1:
        return
    if s.engine != "node":
        raise ScenarioError("--gossip-steps > 1 needs --engine node")
    if s.method in ("allreduce", "local"):
        why = "averages exactly already" if s.method == "allreduce" else "mixes nothing"
        raise ScenarioError(f"--gossip-steps > 1 does not apply to --method {s.method} ({why})")
    if s.mode != "rounds":
        raise ScenarioError(
            "--gossip-steps > 1 needs --mode rounds (async gossips on its own clock)"
        )


def check_mode(s: Scenario) -> None:
    """``--mode`` and the asynchronous mode's clocks, staleness and time budget."""
    if s.mode not in SIM_MODES:
        raise ScenarioError(f"--mode {s.mode!r} is unknown; use rounds or async")
    for name in ("train_period_s", "gossip_period_s"):
        value = getattr(s, name)
        if not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ScenarioError(
                f"--{flag_name(name)} must be a positive number of seconds, got {value!r}"
            )
    value = s.max_staleness
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ScenarioError(f"--max-staleness must be a whole number >= 0, got {value!r}")
    duration = s.duration_s
    if not isinstance(duration, int | float) or not 0 <= duration < math.inf:
        raise ScenarioError(f"--duration-s must be a number of seconds >= 0, got {duration!r}")
    if duration > 0 and s.mode != "async":
        raise ScenarioError("--duration-s needs --mode async (rounds mode stops by rounds)")
    if s.mode == "async" and s.method == "allreduce":
        raise ScenarioError(
            "--method allreduce is a lock-step reference; use it with --mode rounds"
        )


def check_faults(s: Scenario) -> None:
    """Link faults, partitions, churn and attacks: ranges and peer numbers."""
    for name in ("latency_ms", "jitter_ms", "bandwidth_mbps", "step_time_s", "speed_spread"):
        value = getattr(s, name)
        if not isinstance(value, int | float) or not value >= 0:
            raise ScenarioError(f"--{flag_name(name)} must be a number >= 0, got {value!r}")
    for name in ("loss", "churn", "attackers"):
        value = getattr(s, name)
        if not isinstance(value, int | float) or not 0 <= value < 1:
            raise ScenarioError(f"--{flag_name(name)} must be in [0, 1), got {value!r}")
    if s.partition_at is not None and not 1 <= s.partition_at[0] < s.partition_at[1]:
        raise ScenarioError(
            f"--partition-at {s.partition_at[0]}:{s.partition_at[1]} must be "
            "ROUND:HEAL_ROUND with 1 <= ROUND < HEAL_ROUND"
        )
    grouped = [p for g in s.partition_groups for p in g]
    if any(not 0 <= p < s.nodes for p in grouped) or len(set(grouped)) != len(grouped):
        raise ScenarioError("partition_groups must list distinct peer numbers 0..nodes-1")
    if s.churn_mode not in CHURN_MODES:
        raise ScenarioError(f"--churn-mode must be one of {', '.join(CHURN_MODES)}")
    if not isinstance(s.churn_downtime, int) or s.churn_downtime < 0:
        raise ScenarioError("--churn-downtime must be a whole number of rounds >= 0")
    if any(e.peer >= s.nodes for e in s.churn_events):
        raise ScenarioError("a churn event names a peer number >= nodes")
    if s.attack is not None:
        from spargo.sims.attacks import parse_attack

        parse_attack(s.attack)
        if s.attackers == 0:
            raise ScenarioError("--attack needs --attackers FRACTION > 0 (e.g. 0.25)")
