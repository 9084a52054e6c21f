"""Experiment trackers: a run's scenario and per-round swarm numbers, in TensorBoard or MLflow.

Researchers keep their runs in the tools they already use. A tracker receives the scenario
once, as hyper-parameters (nested options flattened to ``method_options.KEY``), then one set
of scalars per round (``accuracy/global_mean``, ``accuracy/local_min``, ``loss/train_mean``,
``traffic/mb_sent``, ``consensus/distance``, ``density/mean``, ``drops/total``, ...; the step
is the round index of ``rounds.jsonl``), then the summary's numbers (``summary/KEY``), and is
closed with a status: ``FINISHED``, ``KILLED`` (interrupted) or ``FAILED``.

From the command line: ``spargo sim --tensorboard DIR`` (events under ``DIR/<run name>``) and
``spargo sim --mlflow [URI]`` (default: a file store in the run folder, ``<out>/mlruns``);
a sweep makes one tracker run per cell, named by the cell. From Python::

    from spargo.sims import Scenario, run
    from spargo.sims.trackers import MlflowTracker, TensorBoardTracker

    with TensorBoardTracker("tb") as tb, MlflowTracker("mlruns") as ml:
        run(Scenario(rounds=10), trackers=[tb, ml])

The ``with`` closes a tracker whose run was interrupted (status ``KILLED``) or failed. The
back ends (``sims/tracker_backends.py``) import their libraries only when a tracker is made,
so the edge install never needs them; anything with ``start``/``log``/``close`` is a tracker.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from spargo.sims.tracker_backends import (
    ClosingTracker,
    MlflowTracker,
    TensorBoardTracker,
    TrackerError,
    ensure_experiment,
    mlflow_client,
    mlflow_errors,
    require,
    tracking_uri,
)

if TYPE_CHECKING:
    from spargo.node.metrics import RoundMetrics
    from spargo.sims.scenario import Scenario

__all__ = [
    "Feed",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "TrackerError",
    "TrackerSpec",
    "Trackers",
    "add_flags",
    "round_scalars",
    "scenario_params",
]

#: A hyper-parameter value as both trackers store it.
Param = str | int | float | bool
OnRound = Callable[[int, list["RoundMetrics"]], None]
#: MLflow refuses longer parameter values (``MAX_PARAM_VAL_LENGTH``).
MAX_PARAM_CHARS = 6000


class Tracker(Protocol):
    """Where a run's numbers go. ``start`` once, ``log`` once per round, ``close`` once
    (later calls do nothing); ``run_name`` is the name the caller suggests, a tracker made
    with its own name keeps it."""

    def start(self, run_name: str, params: Mapping[str, Param]) -> None: ...

    def log(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class Trackers(ClosingTracker):
    """Several trackers as one: iterable (pass it to ``run``) and closed together."""

    def __init__(self, trackers: Iterable[Tracker] = ()) -> None:
        self.items: tuple[Tracker, ...] = tuple(trackers)

    def __iter__(self) -> Iterator[Tracker]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def close(self, status: str = "FINISHED") -> None:
        errors = []
        for tracker in self.items:  # each one, even when another fails to close
            try:
                tracker.close(status)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class Feed:
    """Feeds trackers from a run (the runner's hook): the scenario at ``start``, each
    round's scalars through the hook ``start`` returns, the summary and status at ``finish``."""

    def __init__(
        self,
        trackers: Iterable[Tracker],
        scenario: Scenario,
        stats: Sequence[Mapping[str, Any]],
    ) -> None:
        self.trackers = tuple(trackers)
        self.scenario = scenario
        self.stats = stats
        self._seen: dict[str, RoundMetrics] = {}
        self._step = 0

    def start(self, on_round: OnRound | None) -> OnRound | None:
        """Start every tracker (run name: the scenario's label, unless a tracker has its
        own) and return the runner's per-round hook: ``on_round``, then the trackers
        (``on_round`` itself when there are no trackers)."""
        if not self.trackers:
            return on_round
        params = scenario_params(self.scenario.to_dict())
        for tracker in self.trackers:
            tracker.start(self.scenario.label, params)

        def hook(round_index: int, metrics: list[RoundMetrics]) -> None:
            if on_round is not None:
                on_round(round_index, metrics)
            self.round(round_index, metrics)

        return hook

    def round(self, round_index: int, metrics: Sequence[RoundMetrics]) -> None:
        """Log round ``round_index`` (its swarm-wide row is the newest with that index)."""
        row: Mapping[str, Any] = next(
            (s for s in reversed(self.stats) if s.get("round") == round_index), {}
        )
        scalars = round_scalars(row, metrics, self._seen)
        self._step = round_index
        for tracker in self.trackers:
            tracker.log(round_index, scalars)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Log the summary's numbers and close every tracker (``KILLED`` if interrupted)."""
        if not self.trackers:
            return
        given = self.scenario.to_dict()  # what merely repeats the scenario is a parameter
        scalars = {
            f"summary/{k}": float(v)
            for k, v in summary.items()
            if _number(v) and math.isfinite(v) and given.get(k, math.nan) != v
        }
        status = "KILLED" if summary.get("interrupted") else "FINISHED"
        for tracker in self.trackers:
            tracker.log(self._step, scalars)
        Trackers(self.trackers).close(status)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def round_scalars(
    row: Mapping[str, Any], metrics: Sequence[RoundMetrics], seen: dict[str, RoundMetrics]
) -> dict[str, float]:
    """One round's scalars for the trackers.

    ``row``: the runner's swarm-wide row (``round_stats``); ``metrics``: the records of the
    peers that completed the round; ``seen``: every peer's latest record so far, updated
    here, so that drops (cumulative per peer) include the peers that left. Accuracies are
    fractions in [0, 1] over the peers evaluated this round (none when ``eval_every`` skips
    it): ``global`` on the shared test set, ``local`` on each peer's own split. Traffic is
    cumulative MB (1e6 bytes) sent by all peers; drops count messages peers refused.
    """
    for m in metrics:
        seen[m.peer_id] = m
    out: dict[str, float] = {"swarm/peers": float(len(metrics))}
    _spread(out, "accuracy/global", [m.global_accuracy for m in metrics])
    _spread(out, "accuracy/local", [m.accuracy for m in metrics])
    losses = _finite([m.loss for m in metrics])
    if losses:
        out["loss/train_mean"] = sum(losses) / len(losses)
    for key, tag, scale in _ROW_SCALARS:
        value: Any = row.get(key)
        if _number(value) and math.isfinite(value):
            out[tag] = float(value) / scale
    drops: Counter[str] = Counter()
    for m in seen.values():
        drops.update(m.drops)
    out["drops/total"] = float(sum(drops.values()))
    out.update({f"drops/{reason}": float(n) for reason, n in sorted(drops.items())})
    return out


#: (round_stats key, scalar tag, divisor) taken from the runner's swarm-wide row.
_ROW_SCALARS = (
    ("bytes_sent_total", "traffic/mb_sent", 1e6),
    ("density", "density/mean", 1.0),
    ("consensus_distance", "consensus/distance", 1.0),
    ("time_s", "time/simulated_s", 1.0),
)


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _spread(out: dict[str, float], prefix: str, values: Iterable[float | None]) -> None:
    finite = _finite(values)
    if finite:
        out[f"{prefix}_mean"] = sum(finite) / len(finite)
        out[f"{prefix}_min"] = min(finite)


def scenario_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, Param]:
    """A scenario's fields as flat hyper-parameters: nested mappings as ``KEY.SUBKEY``,
    lists and tuples as JSON text, ``None`` left out (unset), text cut to 6000 characters
    (MLflow's limit). ``values`` is ``Scenario.to_dict()``."""
    out: dict[str, Param] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scenario_params(value, prefix=f"{name}."))
        elif isinstance(value, bool | int | float):
            out[name] = value
        elif value is not None:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 1] + "…"
    return out


@dataclass(frozen=True)
class TrackerSpec:
    """Which trackers a command line asked for, as plain data (it travels to sweep workers).

    ``tensorboard``: the log folder; ``mlflow``: the tracking URI; ``experiment``: the MLflow
    experiment; ``group``: a TensorBoard sub-folder shared by a sweep's cells.
    """

    tensorboard: str | None = None
    mlflow: str | None = None
    experiment: str = "spargo"
    group: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace, out_dir: Path, *, sweep: bool = False) -> Self:
        """From ``--tensorboard``/``--mlflow``; a bare ``--mlflow`` stores in ``out_dir``."""
        logdir = getattr(args, "tensorboard", None)
        uri = getattr(args, "mlflow", None)
        if logdir is not None and not logdir.strip():
            raise TrackerError("--tensorboard: give a folder for the event files")
        return cls(
            tensorboard=None if logdir is None else str(Path(logdir).expanduser().resolve()),
            mlflow=None if uri is None else tracking_uri(uri or out_dir / "mlruns"),
            experiment=out_dir.name if sweep else "spargo",
            group=out_dir.name if sweep else "",
        )

    def prepare(self) -> None:
        """Check in this process what every cell will need: the extras, the MLflow store
        and experiment (made once, before parallel workers would race to make it)."""
        if self.tensorboard is not None:
            require("tensorboard")
        if self.mlflow is not None:
            require("mlflow")
            with mlflow_errors(self.mlflow):
                ensure_experiment(mlflow_client(self.mlflow), self.experiment)

    def open(self, run_name: str) -> Trackers:
        """The trackers for one run called ``run_name`` (none if no flag was given)."""
        trackers: list[Tracker] = []
        if self.tensorboard is not None:
            name = f"{self.group}/{run_name}" if self.group else run_name
            trackers.append(TensorBoardTracker(self.tensorboard, run_name=name))
        if self.mlflow is not None:
            trackers.append(
                MlflowTracker(self.mlflow, experiment=self.experiment, run_name=run_name)
            )
        return Trackers(trackers)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--tensorboard DIR`` and ``--mlflow [URI]`` for ``spargo sim``."""
    g = parser.add_argument_group("experiment trackers")
    g.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="log the scenario and each round to TensorBoard under DIR/<run> "
        "(needs spargo[tensorboard])",
    )
    g.add_argument(
        "--mlflow",
        metavar="URI",
        nargs="?",
        const="",
        help="log to MLflow: a tracking URI or folder; alone, a file store in the run "
        "folder (needs spargo[mlflow])",
    )
