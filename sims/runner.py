"""Run a scenario: N real ``Node``s on in-memory transports, on a virtual clock.

This is the Python API for simulation scripts::

    from spargo.sims import Scenario, run
    result = run(Scenario(nodes=8, topology="ring", method="dense", rounds=10))
    print(result.summary["accuracy_mean"])
    for row in result.round_stats:          # one dict per round, swarm-wide
        print(row["round"], row["accuracy_mean"], row["consensus_distance"])

A run is deterministic for a given scenario (seed included): the same summary, the same
per-peer metrics, the same message order; only ``wall_s`` differs. Rounds are numbered from 0
(``round_stats[k]["round"] == k``), as in every file spargo writes.

Callbacks see a run as it goes: ``on_record`` every peer's ``RoundMetrics``, ``on_row`` every
swarm-wide round row, ``on_round(r, metrics)`` the peers' metrics of each finished round (the
report writer, the progress display and experiment trackers attach here). ``stop`` ends a run
early and cleanly (Ctrl-C): the summary then says ``"interrupted": true``.

In async mode (``Scenario(mode="async")``) a peer's round is its count of local training
bursts: round r's swarm-wide row is emitted once every live peer has done r + 1 bursts, and
compares the peers at their (r + 1)-th burst, which fast and slow peers reach at different
simulated times (``time_s`` is the latest). Each peer does ``rounds`` bursts, then leaves.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spargo.node.metrics import RoundMetrics
from spargo.sims.clock import run_virtual
from spargo.sims.scenario import Scenario, accuracy_basis
from spargo.sims.swarm import Swarm, peer_ids
from spargo.sims.trackers import Feed, Tracker

__all__ = ["SimResult", "peer_ids", "run", "summarise"]

OnRound = Callable[[int, list[RoundMetrics]], None]
OnRow = Callable[[dict[str, Any]], None]
OnRecord = Callable[[RoundMetrics], None]


class StopFlag:
    """Set ``requested`` (from a signal handler, say) and the run stops at the next record."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""

    def request(self, reason: str = "interrupted") -> None:
        self.requested = True
        self.reason = self.reason or reason


@dataclass
class SimResult:
    """What a run returns in memory.

    ``summary``: the headline numbers (``summary.json``); ``rounds``: every peer's
    ``RoundMetrics`` in the order recorded; ``round_stats``: one swarm-wide dict per round
    (accuracy, density, MB sent, consensus distance, live peers); ``faults``: what the
    simulated network and churn did.
    """

    scenario: Scenario
    summary: dict[str, Any]
    rounds: list[RoundMetrics] = field(default_factory=list)
    round_stats: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, Any] = field(default_factory=dict)
    #: Graph file label -> the peer id it names (sanitised where not a valid id); empty for
    #: generated graphs. Written to ``peers.json``.
    peer_labels: dict[str, str] = field(default_factory=dict)

    def by_round(self) -> dict[int, list[RoundMetrics]]:
        """Peers' metrics grouped by round."""
        out: dict[int, list[RoundMetrics]] = {}
        for m in self.rounds:
            out.setdefault(m.round, []).append(m)
        return out


class _Rounds:
    """Collects records; emits round r once every live peer is past it (with consensus)."""

    def __init__(
        self,
        consensus: bool,
        basis: str,
        on_round: OnRound | None = None,
        on_row: OnRow | None = None,
        on_record: OnRecord | None = None,
    ) -> None:
        self.on_round = on_round
        self.on_row = on_row
        self.on_record = on_record
        self.basis = basis
        self.consensus = consensus
        self.swarm: Swarm | None = None
        self.history: list[RoundMetrics] = []
        self.stats: list[dict[str, Any]] = []
        self._pending: dict[int, list[RoundMetrics]] = {}
        self._params: dict[int, list[np.ndarray]] = {}
        self._next = 0  # rounds below this were emitted already
        #: Each peer's bytes sent as of its latest emitted record (a row's total).
        self._sent: dict[str, int] = {}

    def record(self, metrics: RoundMetrics) -> None:
        self.history.append(metrics)
        if self.on_record is not None:
            self.on_record(metrics)
        if metrics.round < self._next:  # a rejoined peer replaying a round: history only
            return
        self._pending.setdefault(metrics.round, []).append(metrics)
        if self.consensus and self.swarm is not None:
            model = self.swarm.nodes[metrics.peer_id].model
            with torch.no_grad():
                flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            self._params.setdefault(metrics.round, []).append(flat.numpy().copy())
        self.flush(final=False)

    def flush(self, final: bool) -> None:
        swarm = self.swarm
        while self._pending:
            r = min(self._pending)
            live = swarm.live if swarm is not None and not final else ()
            if swarm is not None and any(swarm.nodes[p].round <= r for p in live):
                return
            self._next = r + 1
            self._emit(r, self._pending.pop(r), self._params.pop(r, []))

    def _emit(self, r: int, metrics: list[RoundMetrics], params: list[np.ndarray]) -> None:
        metrics.sort(key=lambda m: m.peer_id)
        acc = [_headline(m, self.basis) for m in metrics]
        global_acc = [g for m in metrics if (g := m.global_accuracy) is not None and g == g]
        local_acc = [a for m in metrics if not math.isnan(a := m.accuracy)]
        acc = [a for a in acc if not math.isnan(a)]
        distance = None
        if len(params) > 1:
            stack = np.stack(params).astype(np.float64)
            distance = float(((stack - stack.mean(axis=0)) ** 2).sum(axis=1).mean())
        # Bytes as each peer's record of this round says (its latest, for a peer that missed
        # it): not the live counters, which already hold the sends of peers that moved on to
        # round r + 1 while a slower one finished round r.
        self._sent.update({m.peer_id: m.bytes_sent for m in metrics})
        sent = sum(self._sent.values())
        self.stats.append(
            {
                "round": r,
                "peers": len(metrics),
                "accuracy_mean": _r(np.mean(acc)) if acc else None,
                "accuracy_min": _r(np.min(acc)) if acc else None,
                "global_accuracy_mean": _r(np.mean(global_acc)) if global_acc else None,
                "local_accuracy_mean": _r(np.mean(local_acc)) if local_acc else None,
                "density": _r(np.mean([m.density for m in metrics])),
                "bytes_sent_total": sent,
                "consensus_distance": None if distance is None else _r(distance),
                "time_s": _r(max(m.time_s for m in metrics)),
            }
        )
        if self.on_row is not None:
            self.on_row(self.stats[-1])
        if self.on_round is not None:
            self.on_round(r, metrics)


def _headline(m: RoundMetrics, basis: str = "global") -> float:
    """The accuracy a headline reports: the global test set, or the peer's own split; a run
    without a global test set falls back to the local one."""
    if basis == "global" and m.global_accuracy is not None:
        return m.global_accuracy
    return m.accuracy


def run(
    scenario: Scenario,
    *,
    on_round: OnRound | None = None,
    on_row: OnRow | None = None,
    on_record: OnRecord | None = None,
    stop: StopFlag | None = None,
    trackers: Iterable[Tracker] = (),
) -> SimResult:
    """Run ``scenario`` to the end (or until ``stop`` is requested) and return its metrics;
    deterministic for a given seed.

    ``on_round(round_index, metrics)`` is called once per round, in order, with the metrics
    of the peers that completed it (sorted by peer id); ``on_row(row)`` with the round's
    swarm-wide row just before; ``on_record(metrics)`` with each peer's record as it comes.
    A stopped run keeps only the rounds every live peer finished. ``trackers``
    (sims/trackers.py) get the scenario, each round's scalars and the summary; the caller
    closes them (an interrupted run's summary says so, and they are closed as ``KILLED``).
    """
    if scenario.engine == "batched":
        from spargo.sims.batched import run_batched

        return run_batched(
            scenario,
            on_round=on_round,
            on_row=on_row,
            on_record=on_record,
            stop=stop,
            trackers=trackers,
        )
    torch.set_num_threads(1)
    started = time.perf_counter()
    basis = accuracy_basis(scenario)
    rounds = _Rounds(scenario.consensus, basis, None, on_row, on_record)
    feed = Feed(trackers, scenario, rounds.stats)  # experiment trackers (TensorBoard, MLflow)
    rounds.on_round = feed.start(on_round)
    swarm = Swarm(scenario, rounds.record, halt_when=(lambda: stop.requested) if stop else None)
    rounds.swarm = swarm
    run_virtual(swarm.run())
    if not swarm.halted:
        rounds.flush(final=True)
    faults = {
        "network_drops": dict(sorted(swarm.policy.drops.items())),
        "churn_events": [vars(e) for e in swarm.events],
        "rejoins": dict(sorted(swarm.rejoins.items())),
        "attackers": sorted(swarm.attackers),
        "step_time_s": [_r(t) for t in swarm.step_times],
    }
    summary = summarise(scenario, swarm, rounds.stats, time.perf_counter() - started)
    feed.finish(summary)
    return SimResult(
        scenario, summary, rounds.history, rounds.stats, faults, dict(swarm.peer_labels)
    )


def summarise(
    scenario: Scenario, swarm: Swarm, stats: list[dict[str, Any]], wall_s: float
) -> dict[str, Any]:
    """The run's summary (the JSON object ``spargo sim --json`` prints last)."""
    finals = [node.history[-1] for node in swarm.nodes.values() if node.history]
    basis = accuracy_basis(scenario)
    last_records = [_headline(m, basis) for m in finals]
    if swarm.final:  # async: each peer's model as it left, after its last merges
        finals = [_at_leave(m, swarm.final.get(m.peer_id)) for m in finals]
    honest = [m for m in finals if m.peer_id not in swarm.attackers] or finals
    global_acc = [m.global_accuracy for m in honest if m.global_accuracy is not None]
    local_acc = [m.accuracy for m in honest if not math.isnan(m.accuracy)]
    drops = _drops(swarm)
    headline = local_acc if basis == "local" or not global_acc else global_acc
    distances = [s["consensus_distance"] for s in stats if s["consensus_distance"] is not None]
    return {
        "name": scenario.label,
        "nodes": len(swarm.nodes),
        "rounds": scenario.rounds,
        "method": scenario.method,
        "topology": scenario.topology,
        "task": scenario.task,
        "partition": scenario.partition,
        "seed": scenario.seed,
        "mode": scenario.mode,
        "accuracy_on": "local" if headline is local_acc else "global",
        "accuracy_mean": _r(np.mean(headline)) if headline else None,
        "accuracy_min": _r(np.min(headline)) if headline else None,
        "accuracy_max": _r(np.max(headline)) if headline else None,
        "global_accuracy_mean": _r(np.mean(global_acc)) if global_acc else None,
        "local_accuracy_mean": _r(np.mean(local_acc)) if local_acc else None,
        "averaged_model_accuracy": averaged_model_accuracy(swarm, honest),
        "density": _r(np.mean([m.density for m in finals])) if finals else None,
        "consensus_distance": distances[-1] if distances else None,
        "bytes_sent_total": sum(node.counters.bytes_sent for node in swarm.nodes.values()),
        "messages_sent": sum(node.counters.messages_sent for node in swarm.nodes.values()),
        "messages_dropped": sum(drops.values()),
        "drops": dict(sorted(drops.items())),
        "attackers": len(swarm.attackers),
        "churn_events": swarm.downs,
        "churn_planned": len(swarm.events),
        **swarm.merge_log.summary(),
        **_async_extras(scenario, swarm, last_records),
        "simulated_s": _r(max((m.time_s for m in finals), default=0.0)),
        "wall_s": round(wall_s, 3),
        "rounds_done": len(stats),
        "interrupted": swarm.halted,
    }


def averaged_model_accuracy(swarm: Swarm, finals: list[RoundMetrics]) -> float | None:
    """Accuracy on the global test set of the average of the peers' final models (every
    floating tensor of the state dict, thresholds included, averaged equally): the one model
    a consensus would hand out, which a mean of per-peer accuracies is not. None without a
    global test set or peers."""
    nodes = [swarm.nodes[m.peer_id] for m in finals if m.peer_id in swarm.nodes]
    test = nodes[0].data.global_test if nodes else None
    if test is None or len(test) == 0:
        return None
    states = [node.model.state_dict() for node in nodes]
    mean = {
        k: torch.stack([s[k].float() for s in states]).mean(dim=0).to(v.dtype)
        if v.is_floating_point()
        else v
        for k, v in states[0].items()
    }
    model = copy.deepcopy(nodes[0].model)
    model.load_state_dict(mean)
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(test.x))
        correct = (logits.argmax(dim=1) == torch.as_tensor(test.y)).float().mean()
    return _r(float(correct))


def _drops(swarm: Swarm) -> dict[str, int]:
    """Dropped messages by reason: the peers' own drops, then the network's."""
    drops: dict[str, int] = {}
    for node in swarm.nodes.values():
        for reason, count in node.counters.drops.items():
            drops[reason] = drops.get(reason, 0) + count
    network = swarm.policy.drops
    for reason, count in network.items():
        drops[f"network_{reason}"] = count
    # Messages in flight to (or sent to) a peer that was down when they arrived.
    unreachable = swarm.network.stats.messages_dropped - sum(network.values())
    if unreachable:
        drops["network_unreachable"] = unreachable
    return drops


def _at_leave(m: RoundMetrics, final: tuple[float, float | None] | None) -> RoundMetrics:
    if final is None:
        return m
    return dataclasses.replace(m, accuracy=final[0], global_accuracy=final[1])


def _async_extras(scenario: Scenario, swarm: Swarm, last_records: list[float]) -> dict[str, Any]:
    """Async summary fields: bursts per peer, and the last records' accuracy (taken right
    after each peer's last burst, before the merges the headline accuracy includes)."""
    if scenario.mode != "async":
        return {}
    bursts = [node.round for node in swarm.nodes.values()]
    measured = [a for a in last_records if not math.isnan(a)]
    return {
        "bursts_min": min(bursts),
        "bursts_max": max(bursts),
        "last_record_accuracy_mean": _r(np.mean(measured)) if measured else None,
    }


def _r(x: float | np.floating[Any]) -> float:
    return round(float(x), 6)
