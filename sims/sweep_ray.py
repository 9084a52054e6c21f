"""A sweep's cells as Ray tasks: ``spargo sim --sweep FILE --ray [ADDRESS]``.

Ray (https://docs.ray.io, the ``ray`` extra) is the distributed engine: each cell is one task
of one CPU, run by the same cell runner as the process pool (``sweep.run_cell``), and the
results stream back through ``ray.wait`` as cells end, into the same loop that writes the
tables. Without an address a fresh local Ray instance starts (no dashboard, Ray's own logs
at ERROR, no usage reports) and stops after the sweep; with one the sweep joins that cluster
as a driver: ``auto`` (the cluster ``ray start`` runs on this machine), ``HOST:PORT`` (the
head's GCS port, from a machine of the cluster) or ``ray://HOST:PORT`` (Ray Client, from
anywhere that reaches the head's client port, 10001 by default).

A cell may run on another machine, so a worker writes its reports to a temporary folder and
sends the files back with the result; the driver writes them under the sweep folder, where
``--resume`` finds them. spargo (with the ``sim`` extra) and any ``module:function`` task
must be importable on every node. Tracker folders (``--tensorboard DIR``, a file-store
``--mlflow``) are written on the machine that ran the cell: on a cluster give a shared folder
or an MLflow server. A cell whose worker dies (killed, out of memory, node lost) is a failed
cell, not retried; ``--resume`` runs it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spargo.sims.sweep import Finished, _one_line, run_cell
from spargo.sims.trackers import TrackerSpec

if TYPE_CHECKING:
    from ray import ObjectRef

#: ``HOST:PORT`` or ``ray://HOST:PORT``; the host a name or IPv4 address, or IPv6 in [].
_ADDRESS = re.compile(
    r"(?P<scheme>ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d+)"
)
#: How long a cluster address may take to accept a TCP connection before it is unreachable.
PROBE_TIMEOUT_S = 5.0
_FORMS = "give nothing (a local Ray instance), 'auto', HOST:PORT or ray://HOST:PORT"


def parse_address(text: str) -> str:
    """The address ``--ray`` was given, checked: ``""`` (start a local instance), ``auto``,
    ``HOST:PORT`` or ``ray://HOST:PORT`` with a port in 1..65535. Raises ``ValueError``
    naming the value and the valid forms."""
    address = text.strip()
    if address in ("", "auto"):
        return address
    match = _ADDRESS.fullmatch(address)
    if match is None:
        raise ValueError(f"--ray {text!r} is not a Ray address: {_FORMS}")
    if not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"--ray {text!r}: the port must be in 1..65535")
    return address


def prepare(text: str) -> str:
    """``parse_address``, then check Ray is installed (``ModuleNotFoundError`` naming ``ray``
    otherwise, which ``spargo`` reports as the ``ray`` extra to install)."""
    address = parse_address(text)
    import ray  # noqa: F401

    return address


#: An HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113 §3.4, §6.5).
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _probe(address: str) -> None:
    """Fail in seconds, not after Ray's retries (20 s to minutes, its C++ warnings on stderr),
    when nothing accepts a TCP connection at a ``HOST:PORT`` address, or what does is not a
    gRPC server (Ray's GCS and its Ray Client server both are): a gRPC server answers the
    HTTP/2 preface with a SETTINGS frame (type 4); a web server or anything else does not."""
    match = _ADDRESS.fullmatch(address)
    if match is None:  # "auto": Ray itself answers at once
        return
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as conn:
            conn.sendall(_H2_HELLO)
            head = _read(conn, 9)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectionError(
            f"--ray {address!r}: no Ray cluster answers there ({reason}); start one with "
            "'ray start --head' or check the address"
        ) from None
    if len(head) < 9 or head[3] != 0x04:
        raise ConnectionError(
            f"--ray {address!r}: what listens there does not speak gRPC, so it is not a Ray "
            "cluster (its GCS port, 6379 by default, or ray://HOST:10001); check the address"
        )


def _read(conn: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes (fewer if the peer closes or goes quiet for the probe timeout)."""
    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def ray_session(text: str, cpus: int) -> Iterator[None]:
    """Ray, ready for tasks, for the ``with`` block: a local instance of ``cpus`` CPUs for
    ``""``, else the cluster at the address ``text`` (``parse_address``). A Ray this process
    already started (a notebook, the tests) is used as it is and left running. Raises
    ``ModuleNotFoundError`` without the ``ray`` extra, ``ValueError`` for a malformed address,
    ``ConnectionError`` for a cluster that cannot be reached."""
    address = parse_address(text)
    import ray

    _probe(address)
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a simulation phones no one
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    where = (
        f"joining the Ray cluster at {address}"
        if address
        else f"starting a local Ray instance ({cpus} CPUs)"
    )
    print(f"sweep: {where} ...", file=sys.stderr, flush=True)  # it takes seconds
    try:
        if address:
            ray.init(address=address, **quiet)
        else:  # "local": never join a cluster `ray start` left running on this machine
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError) as exc:  # unreachable; another Ray version
        raise ConnectionError(_unreachable(address, exc)) from None
    try:
        yield
    finally:
        ray.shutdown()


def _unreachable(address: str, exc: BaseException) -> str:
    if address == "auto" and isinstance(exc, ConnectionError):
        return (
            "--ray 'auto': no Ray cluster runs on this machine; start one with 'ray start --head'"
        )
    where = "a local Ray instance" if not address else f"the Ray cluster at {address!r}"
    hint = ""
    if address and "RAY_AUTH_MODE" not in os.environ:  # Ray's clusters want a token by default
        hint = " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token)"
    return f"--ray: cannot start or join {where}: {_one_line(exc)}{hint}"


def ray_cells(
    jobs: Mapping[int, tuple[Any, ...]], fn: Callable[..., Any], limit: int = 0
) -> Finished:
    """Run ``fn(*args)`` for each ``index: args`` of ``jobs`` as a Ray task of one CPU (inside
    ``ray_session``); yield ``(index, result or exception)`` as each ends, at most ``limit``
    in flight (0: as many as Ray schedules). A task's exception comes back as itself; a dead
    worker or lost node as Ray's error. Stopped early, the tasks not yet ended are cancelled."""
    import ray

    task = ray.remote(_in_worker).options(num_cpus=1, max_retries=0)
    waiting = list(jobs.items())
    running: dict[ObjectRef[Any], int] = {}
    path = list(sys.path)  # a module:function task found in the working directory
    try:
        while waiting or running:
            while waiting and (limit <= 0 or len(running) < limit):
                index, args = waiting.pop(0)
                running[task.remote(fn, path, *args)] = index
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                yield running.pop(ref), _outcome(ref)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def _outcome(ref: ObjectRef[Any]) -> Any:
    """A finished task's result, or one line saying why it has none: the cell's own exception
    as the process pool reports it, or what Ray says went wrong (its first line)."""
    import ray
    from ray.exceptions import RayError, RaySystemError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        return _one_line(cause if isinstance(cause, BaseException) else exc)
    except RayError as exc:  # the worker died, the node was lost, the task was cancelled
        first = next(iter(str(exc).strip().splitlines()), "")
        hint = ""
        if isinstance(exc, RaySystemError):  # most often: the cell cannot be unpickled there
            hint = " (is spargo, with the sim extra, installed on every node?)"
        return " ".join(f"{type(exc).__name__}: {first}{hint}".split())


def _in_worker(fn: Callable[..., Any], path: list[str], *args: Any) -> Any:
    """A task's body on a Ray worker: one torch thread (the tasks are the parallelism), the
    driver's import path after the worker's own, then ``fn(*args)``."""
    import torch

    torch.set_num_threads(1)
    sys.path.extend(p for p in path if p not in sys.path)
    return fn(*args)


def run_cell_files(values: dict[str, Any], _out_dir: str, trackers: TrackerSpec) -> Any:
    """``sweep.run_cell`` into a temporary folder; the result carries the report files
    (``files``: path relative to the sweep folder → bytes) for the driver to write."""
    with tempfile.TemporaryDirectory(prefix="spargo-cell-") as tmp:
        result = run_cell(values, tmp, trackers)
        root = Path(tmp)
        result["files"] = {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }
    return result
