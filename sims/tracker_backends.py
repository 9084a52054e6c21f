"""The two tracker back ends of ``sims/trackers.py``: TensorBoard and MLflow.

Each writes with its library's own writer, imported only when a tracker is made:
``torch.utils.tensorboard.SummaryWriter`` (extra ``tensorboard``: torch ships the writer, the
``tensorboard`` package serialises the records and is also the viewer) and
``mlflow.tracking.MlflowClient`` (extra ``mlflow``: ``mlflow-skinny``, MLflow's client without
its server). MLflow's client is used rather than its module-level "active run" API so that
several runs can be open at once and nothing global changes. Their exceptions become one-line
``TrackerError``s naming the folder or URI.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "ClosingTracker",
    "MlflowTracker",
    "TensorBoardTracker",
    "TrackerError",
    "exit_status",
    "require",
    "tracking_uri",
]

#: A hyper-parameter value as both trackers store it.
Param = str | int | float | bool
#: Statuses a tracker is closed with (MLflow's run statuses).
STATUSES = ("FINISHED", "KILLED", "FAILED")


class TrackerError(ValueError):
    """A tracker could not be opened or written (bad URI or folder, a refusing store)."""


class ClosingTracker(ABC):
    """Context manager for a tracker: an exception leaving the block closes it as
    ``KILLED`` (KeyboardInterrupt, SystemExit) or ``FAILED`` (anything else)."""

    @abstractmethod
    def close(self, status: str = "FINISHED") -> None:
        """Finish the run with ``status`` (one of ``STATUSES``); later calls do nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exit_status(kind))


def exit_status(kind: type[BaseException] | None) -> str:
    """The status a tracker closes with when a ``with`` block ends by ``kind``."""
    if kind is None:
        return "FINISHED"
    return "KILLED" if issubclass(kind, KeyboardInterrupt | SystemExit) else "FAILED"


def require(module: str) -> None:
    """Import ``module`` (a tracker's library) or say which extra installs it."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ModuleNotFoundError(
            f"the {module} tracker needs the '{module}' extra: pip install 'spargo[{module}]'",
            name=module,
        ) from exc


class TensorBoardTracker(ClosingTracker):
    """Writes event files under ``logdir/<run name>`` (a fresh folder: ``-2``, ``-3``, ...
    is appended when the name is taken) with ``torch.utils.tensorboard.SummaryWriter``.

    The scenario goes to the HParams dashboard (a session-start record), each round's
    scalars to the Scalars dashboard, the status to a session-end record (TensorBoard has no
    'aborted' status: ``KILLED`` and ``FAILED`` are both ``STATUS_FAILURE``).
    """

    def __init__(self, logdir: str | Path, run_name: str | None = None) -> None:
        require("tensorboard")
        self.logdir = Path(logdir)
        self.run_name = run_name
        #: The run's event folder, once started.
        self.path: Path | None = None
        self._writer: Any = None

    def start(self, run_name: str, params: Mapping[str, Param]) -> None:
        from tensorboard.plugins.hparams import summary_v2
        from torch.utils.tensorboard import SummaryWriter

        self.path = _fresh_dir(self.logdir / (self.run_name or run_name))
        self._writer = SummaryWriter(log_dir=str(self.path))  # type: ignore[no-untyped-call]
        self._writer.file_writer.add_summary(summary_v2.hparams_pb(dict(params)))
        self._writer.flush()

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()  # one flush per round: TensorBoard shows a live run

    def close(self, status: str = "FINISHED") -> None:
        if self._writer is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        code = "STATUS_SUCCESS" if status == "FINISHED" else "STATUS_FAILURE"
        end = plugin_data_pb2.SessionEndInfo(
            status=api_pb2.Status.Value(code), end_time_secs=time.time()
        )
        data = plugin_data_pb2.HParamsPluginData(session_end_info=end)
        value = Summary.Value(
            tag=metadata.SESSION_END_INFO_TAG,
            metadata=metadata.create_summary_metadata(data),
            tensor=metadata.NULL_TENSOR,
        )
        writer, self._writer = self._writer, None
        writer.file_writer.add_summary(Summary(value=[value]))
        writer.close()


def _fresh_dir(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... if it already holds files."""
    candidate, n = path, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    try:
        candidate.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackerError(f"--tensorboard: cannot create {candidate}: {exc.strerror}") from exc
    return candidate


class MlflowTracker(ClosingTracker):
    """One MLflow run in ``experiment`` (made if missing) through ``MlflowClient``.

    ``uri`` is a tracking URI (``file:...``, ``sqlite:///...``, ``http://...``) or a plain
    folder, which becomes a file store. MLflow 3 keeps its file store in maintenance mode
    behind ``MLFLOW_ALLOW_FILE_STORE``; this tracker sets that variable (unless already set)
    when the URI is a file store, so a local folder works with ``mlflow-skinny`` alone.
    """

    def __init__(
        self, uri: str | Path, *, experiment: str = "spargo", run_name: str | None = None
    ) -> None:
        require("mlflow")
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.run_name = run_name
        #: MLflow's id of the run, once started.
        self.run_id: str | None = None
        self._client: Any = None

    def start(self, run_name: str, params: Mapping[str, Param]) -> None:
        from mlflow.entities import Param as MlflowParam

        with mlflow_errors(self.uri):
            self._client = mlflow_client(self.uri)
            experiment_id = ensure_experiment(self._client, self.experiment)
            run = self._client.create_run(experiment_id, run_name=self.run_name or run_name)
            self.run_id = run.info.run_id
            items = [MlflowParam(k, str(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
                self._client.log_batch(self.run_id, params=items[i : i + 100])

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp_ms = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp_ms, step) for k, v in scalars.items()]
        with mlflow_errors(self.uri):
            self._client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        with mlflow_errors(self.uri):
            self._client.set_terminated(run_id, status=status)


def tracking_uri(uri: str | Path) -> str:
    """An MLflow tracking URI: a URI as given, a plain folder as an absolute ``file:`` URI."""
    text = str(uri)
    if not text:
        raise TrackerError("--mlflow: give a tracking URI or a folder (or nothing: the run's)")
    if "://" in text or text.startswith("file:") or text == "databricks":
        return text
    return Path(text).expanduser().resolve().as_uri()


def mlflow_client(uri: str) -> Any:
    """``MlflowClient`` on ``uri``, allowing MLflow 3's file store for ``file:`` URIs."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name``, made if missing (a concurrent maker is tolerated)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another sweep worker made it first
        if found is None:
            raise
        return str(found.experiment_id)


@contextlib.contextmanager
def mlflow_errors(uri: str) -> Iterator[None]:
    """Translates MLflow's exceptions into one-line ``TrackerError``s naming the URI."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        text = " ".join(str(exc.message).split())
        if len(text) > 200:  # MLflow's messages run to whole paragraphs: one line is enough
            text = text[:199].rstrip() + "…"
        raise TrackerError(f"--mlflow {uri}: {text}") from exc
