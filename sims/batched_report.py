"""Metrics of a batched run, in the node engine's shapes: records, round rows and a summary.

On each evaluation round (``eval_every``, and the last) the ``Recorder`` evaluates every peer,
or with ``Scenario.eval_peers = K`` a seeded sample of K (drawn afresh each round; every peer
every ``eval_all_every`` rounds and in the last when that is set; the round's row lists the
sampled ids under ``evaluated``) — on the global test set and their own local test splits,
batched (``sims.batched_model``), then builds one ``RoundMetrics`` per peer (accuracies NaN
where a peer was not evaluated), the swarm-wide row of ``sims.runner`` (plus
``evaluated_peers``) and, at the end, the summary ``sims.runner.summarise`` writes (plus
``engine`` and ``eval_peers``).
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from spargo.node.metrics import RoundMetrics
from spargo.sims.scenario import accuracy_basis

if TYPE_CHECKING:
    from spargo.sims.batched import BatchedSwarm
    from spargo.sims.runner import OnRecord, OnRound, OnRow, SimResult


def _r(x: float | np.floating[Any]) -> float:
    return round(float(x), 6)


class Recorder:
    """Evaluates, records and summarises one ``BatchedSwarm`` run."""

    def __init__(
        self,
        swarm: BatchedSwarm,
        on_round: OnRound | None,
        on_row: OnRow | None = None,
        on_record: OnRecord | None = None,
    ) -> None:
        self.swarm = swarm
        self.on_round = on_round
        self.on_row = on_row
        self.on_record = on_record
        self.history: list[RoundMetrics] = []
        self.stats: list[dict[str, Any]] = []
        #: Each peer's latest record (a peer churned out for good keeps its last one).
        self.last: dict[str, RoundMetrics] = {}
        #: ``local`` for personalised methods (SpaFL: each peer on its own test split).
        self.basis = accuracy_basis(swarm.scenario)

    def evaluated(self, round_index: int) -> np.ndarray:
        """Peer numbers evaluated after ``round_index`` (sorted; empty between evaluations)."""
        s = self.swarm.scenario
        last = round_index + 1 == s.rounds
        if not (round_index % s.eval_every == 0 or last):
            return np.zeros(0, dtype=np.int64)
        n = self.swarm.n
        full = s.eval_all_every > 0 and ((round_index + 1) % s.eval_all_every == 0 or last)
        if full or s.eval_peers == 0 or s.eval_peers >= n:
            return np.arange(n)
        rng = np.random.default_rng([s.seed, 919, round_index])
        return np.sort(rng.choice(n, size=s.eval_peers, replace=False))

    def record(self, round_index: int, loss: np.ndarray, merge: list[dict[str, float]]) -> None:
        """Evaluate and record round ``round_index`` (after its merge)."""
        import torch

        from spargo.sims.batched_model import global_accuracy, local_accuracy

        swarm = self.swarm
        started = time.perf_counter()
        live = swarm.live(round_index)  # churn: the absent peers record nothing
        peers = self.evaluated(round_index)
        peers = peers[live[peers]]
        local = np.full(swarm.n, math.nan)
        glob = np.full(swarm.n, math.nan)
        if len(peers):
            chosen = torch.as_tensor(peers, device=swarm.device)
            used = swarm.used_params()
            glob[peers] = global_accuracy(used, chosen, swarm.test_x, swarm.test_y)
            local[peers] = local_accuracy(used, peers, swarm.data)
        swarm.seconds["eval"] += time.perf_counter() - started
        wire = swarm.wire
        # Python lists first: indexing numpy arrays element by element costs more than the
        # records themselves (a hot loop at 10⁴ peers); the values are the same.
        times, losses = np.asarray(swarm.time_s, dtype=np.float64).tolist(), loss.tolist()
        locals_, globals_ = local.tolist(), glob.tolist()
        density = np.asarray(swarm.density(), dtype=np.float64).tolist()
        sent, received_b = wire.bytes_sent.tolist(), swarm.bytes_received.tolist()
        messages, received, stale = (
            wire.messages_sent.tolist(), swarm.received.tolist(), swarm.stale.tolist()
        )  # fmt: skip
        records = [
            RoundMetrics.unchecked(
                peer_id=swarm.ids[p],
                round=round_index,
                time_s=float(times[p]),
                loss=float(losses[p]),
                accuracy=float(locals_[p]),
                global_accuracy=float(globals_[p]),
                density=float(density[p]),
                bytes_sent=int(sent[p]),
                bytes_received=int(received_b[p]),
                messages_sent=int(messages[p]),
                messages_received=int(received[p]),
                messages_dropped=int(stale[p]),
                drops={"stale": int(stale[p])} if stale[p] else {},
                merge=merge[p],
            )
            for p in np.flatnonzero(live).tolist()
        ]
        self.history.extend(records)
        self.last.update({record.peer_id: record for record in records})
        if self.on_record is not None:
            for record in records:
                self.on_record(record)
        headline = local if self.basis == "local" else glob
        self._row(round_index, headline[peers], glob[peers], local[peers], peers, live)
        if self.on_row is not None:
            self.on_row(self.stats[-1])
        if self.on_round is not None:
            self.on_round(round_index, records)

    def _row(
        self,
        round_index: int,
        accuracy: np.ndarray,
        global_accuracy: np.ndarray,
        local_accuracy: np.ndarray,
        peers: np.ndarray,
        live: np.ndarray,
    ) -> None:
        import torch

        swarm = self.swarm
        density = float(np.mean(swarm.density()[live]))
        evaluated = len(peers)
        sample = 0 < evaluated < int(live.sum())
        distance = None
        if swarm.scenario.consensus and live.sum() > 1:
            rows = torch.as_tensor(live, device=swarm.device)
            flat = swarm.all_params()[rows].to(dtype=torch.float64)
            distance = float(((flat - flat.mean(dim=0)) ** 2).sum(dim=1).mean())
        self.stats.append(
            {
                "round": round_index,
                "peers": int(live.sum()),
                "evaluated_peers": evaluated,
                **({"evaluated": [swarm.ids[p] for p in peers]} if sample else {}),
                "accuracy_mean": _r(np.mean(accuracy)) if evaluated else None,
                "accuracy_min": _r(np.min(accuracy)) if evaluated else None,
                "global_accuracy_mean": _r(np.mean(global_accuracy)) if evaluated else None,
                "local_accuracy_mean": _r(np.mean(local_accuracy)) if evaluated else None,
                "density": _r(density),
                "bytes_sent_total": int(swarm.wire.bytes_sent.sum()),
                "consensus_distance": None if distance is None else _r(distance),
                "time_s": _r(float(swarm.time_s.max(initial=0.0))),
            }
        )

    def averaged_model_accuracy(self) -> float | None:
        """Global test accuracy of the peers' final models averaged equally, every trained
        tensor (SpaFL: τ too) in float32, as ``sims.runner.averaged_model_accuracy``."""
        import torch

        from spargo.sims.batched_model import global_accuracy

        swarm = self.swarm
        if swarm.n == 0 or len(swarm.test_y) == 0:
            return None
        mean = [p.mean(dim=0, keepdim=True) for p in swarm.params]
        if swarm.thresholds is not None:
            averaged = swarm.thresholds.part(slice(0, 1))
            averaged.tau = [t.mean(dim=0, keepdim=True) for t in swarm.thresholds.tau]
            mean = averaged.effective(mean)
        one = torch.zeros(1, dtype=torch.int64, device=swarm.device)
        return _r(global_accuracy(mean, one, swarm.test_x, swarm.test_y)[0])

    def result(self, wall_s: float, *, interrupted: bool = False) -> SimResult:
        """The run's ``SimResult`` (summary keys as ``sims.runner.summarise``); ``interrupted``:
        a stop ended it early."""
        from spargo.sims.runner import SimResult

        s = self.swarm.scenario
        finals = [self.last[peer] for peer in sorted(self.last)]
        glob = [g for m in finals if (g := m.global_accuracy) is not None and not math.isnan(g)]
        local = [m.accuracy for m in finals if not math.isnan(m.accuracy)]
        headline = local if self.basis == "local" else glob
        distances = [
            r["consensus_distance"] for r in self.stats if r["consensus_distance"] is not None
        ]
        wire = self.swarm.wire
        merges = self.swarm.merges
        plan = self.swarm.plan
        found = self.swarm.extra_drops + (Counter() if plan is None else plan.drops)
        drops = {k: v for k, v in sorted(found.items()) if v}
        network = {
            k.removeprefix("network_"): v for k, v in drops.items()
            if k.startswith("network_") and k != "network_unreachable"
        }  # fmt: skip
        churn = self.swarm.churn
        summary: dict[str, Any] = {
            "name": s.label,
            "engine": "batched",
            "nodes": self.swarm.n,
            "rounds": s.rounds,
            "method": s.method,
            "topology": s.topology,
            "task": s.task,
            "partition": s.partition,
            "seed": s.seed,
            "mode": s.mode,
            "eval_peers": s.eval_peers or "all",
            "accuracy_on": self.basis,
            "accuracy_mean": _r(np.mean(headline)) if headline else None,
            "accuracy_min": _r(np.min(headline)) if headline else None,
            "accuracy_max": _r(np.max(headline)) if headline else None,
            "global_accuracy_mean": _r(np.mean(glob)) if glob else None,
            "local_accuracy_mean": _r(np.mean(local)) if local else None,
            "averaged_model_accuracy": self.averaged_model_accuracy(),
            "density": _r(np.mean([m.density for m in finals])) if finals else None,
            "consensus_distance": distances[-1] if distances else None,
            "bytes_sent_total": int(wire.bytes_sent.sum()),
            "messages_sent": int(wire.messages_sent.sum()),
            "messages_dropped": sum(drops.values()),
            "drops": drops,
            "attackers": 0,
            "churn_events": 0 if churn is None else len(churn.fired),
            "churn_planned": 0 if churn is None else len(churn.planned),
            "merges": merges,
            "staleness_mean": 0.0 if merges else None,
            "staleness_max": 0 if merges else None,
            "simulated_s": _r(float(self.swarm.time_s.max(initial=0.0))),
            "wall_s": round(wall_s, 3),
            **{f"wall_{k}_s": round(v, 3) for k, v in self.swarm.seconds.items()},
            "rounds_done": len(self.stats),
            "interrupted": interrupted,
        }
        faults: dict[str, Any] = {"network_drops": dict(sorted(network.items()))}
        if churn is not None:
            faults["churn_events"] = [vars(e) for e in churn.planned]
            rejoins = self.swarm.rejoins
            faults["rejoins"] = {self.swarm.ids[v]: rejoins[v] for v in sorted(rejoins)}
        if plan is not None:
            faults["step_time_s"] = [_r(t / max(1, s.local_steps)) for t in plan.compute_s]
        return SimResult(s, summary, self.history, self.stats, faults)


def merge_stats(**values: float | None) -> dict[str, float]:
    """One peer's merge statistics as ``MergeStats(**values).as_dict()`` (the node's one
    schema, its order and defaults), without building a dataclass per peer (a hot loop)."""
    base = _stats_base()
    unknown = values.keys() - base.keys()
    if unknown:
        raise TypeError(f"MergeStats has no field {', '.join(sorted(unknown))}")
    merged = {**base, **values}
    return {k: float(v) for k, v in merged.items() if v is not None}


@functools.cache
def _stats_base() -> dict[str, float | None]:
    """Every ``MergeStats`` field with its default, in schema order."""
    import dataclasses

    from spargo.node.methods.payloads import MergeStats

    return {f.name: getattr(MergeStats(), f.name) for f in dataclasses.fields(MergeStats)}
