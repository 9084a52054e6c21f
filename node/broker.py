"""Launch a local Mosquitto 2 broker as a child process: for tests, benchmarks and `spargo lab`.

``Mosquitto(config)`` writes a generated ``mosquitto.conf`` into a working directory, starts
the broker on a loopback port (port 0 picks a free one), waits until the port accepts TCP
connections and stops it again (SIGTERM, then SIGKILL) so no process is left behind. It is
usable as ``async with``, as ``with`` and through explicit ``start()`` / ``stop()`` calls.

The generated config raises Mosquitto's per-client queue limits: its default
``max_queued_messages 1000`` silently drops QoS 1 messages to a slow subscriber, which would
look like message loss in the gossip layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from spargo.node.errors import NodeError

_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")
_POLL_S = 0.02

Access = Literal["read", "write", "readwrite", "deny"]


class BrokerError(NodeError):
    """The broker could not be started, or a helper file could not be written."""


def find_executable(name: str = "mosquitto") -> str:
    """Path of ``name`` from PATH or the usual sbin directories; BrokerError if missing."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise BrokerError(
        f"{name} not found in PATH or {', '.join(_SEARCH_DIRS)}; "
        "install Mosquitto 2 (Debian: apt-get install -y mosquitto)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def write_password_file(path: Path, credentials: Mapping[str, str]) -> Path:
    """Write a Mosquitto password file (hashed by ``mosquitto_passwd -b``) for ``credentials``."""
    if not credentials:
        raise ValueError("credentials is empty: give at least one username -> password")
    tool = find_executable("mosquitto_passwd")
    path = Path(path)
    path.write_text("")
    path.chmod(0o600)
    for username, password in credentials.items():
        if not username or ":" in username:
            raise ValueError(f"username {username!r} must be non-empty and contain no ':'")
        result = subprocess.run(
            [tool, "-b", str(path), username, password],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            raise BrokerError(f"mosquitto_passwd failed for {username!r}: {result.stderr.strip()}")
    return path


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ``topic`` line of a Mosquitto ACL file; ``%u``/``%c`` are allowed in patterns."""

    access: Access
    topic: str

    def line(self, keyword: str = "topic") -> str:
        return f"{keyword} {self.access} {self.topic}"


def write_acl_file(
    path: Path,
    users: Mapping[str, Sequence[AclRule]],
    patterns: Sequence[AclRule] = (),
) -> Path:
    """Write a Mosquitto ACL file: per-user rules plus ``pattern`` rules that apply to all."""
    lines = [rule.line("pattern") for rule in patterns]
    for username, rules in users.items():
        lines.append("")
        lines.append(f"user {username}")
        lines.extend(rule.line() for rule in rules)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class MosquittoConfig:
    """What the generated ``mosquitto.conf`` contains. Paths are used as given."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port on ``host`` at the first start, keep it on restart
    workdir: Path | None = None  # conf + log (+ persistence); None: a temp dir removed on close
    persistence: bool = True
    autosave_interval_s: int = 1
    persistent_client_expiration: str = "1h"
    password_file: Path | None = None
    acl_file: Path | None = None
    allow_anonymous: bool | None = None  # None: only when no password file is given
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    require_client_cert: bool = False
    max_queued_messages: int = 1_000_000
    max_queued_bytes: int = 0  # 0: no limit
    max_inflight_messages: int = 100
    message_size_limit_bytes: int = 64 * 1024 * 1024
    start_timeout_s: float = 10.0
    stop_timeout_s: float = 5.0
    executable: str | None = None  # None: find ``mosquitto`` in PATH or /usr/sbin

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535 (0 picks a free port)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.require_client_cert and self.tls_ca is None:
            raise ValueError("require_client_cert needs tls_ca (the CA that signs client certs)")
        if not 0 < self.message_size_limit_bytes <= 256 * 1024 * 1024:
            raise ValueError("message_size_limit_bytes must be in 1..268435456 (MQTT's limit)")
        if self.max_queued_messages < 0 or self.max_inflight_messages < 0:
            raise ValueError("queue limits must be >= 0 (0 means no limit)")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def render(self, port: int, workdir: Path) -> str:
        """The text of ``mosquitto.conf`` for a broker listening on ``port``."""
        anonymous = (
            self.password_file is None if self.allow_anonymous is None else (self.allow_anonymous)
        )
        lines = [
            "# generated by spargo (node.broker)",
            "per_listener_settings false",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"message_size_limit {self.message_size_limit_bytes}",
            f"persistent_client_expiration {self.persistent_client_expiration}",
            f"log_dest file {workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Without it Nagle + delayed ACK add ~40 ms to the broker's multi-packet sends.
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # Mosquitto drops root to user "mosquitto", who cannot read our private temp dir.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {workdir}/",
                f"autosave_interval {self.autosave_interval_s}",
            ]
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        lines.append(f"listener {port} {self.host}")
        if self.tls:
            lines += [f"certfile {self.tls_cert}", f"keyfile {self.tls_key}"]
            if self.tls_ca is not None:
                lines.append(f"cafile {self.tls_ca}")
            lines.append(f"require_certificate {'true' if self.require_client_cert else 'false'}")
        return "\n".join(lines) + "\n"


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, wait, then SIGKILL: used by stop() and by the garbage-collection finalizer."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


class Mosquitto:
    """A Mosquitto child process with a generated config (see module docstring)."""

    def __init__(self, config: MosquittoConfig | None = None) -> None:
        self.config = config if config is not None else MosquittoConfig()
        self._executable = self.config.executable or find_executable("mosquitto")
        self._port = self.config.port
        self._process: subprocess.Popen[bytes] | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._workdir: Path | None = self.config.workdir
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._log_offset = 0

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        if self._port == 0:
            raise BrokerError("the broker has not been started yet: its port is not chosen")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT`` (``mqtts://`` for a TLS listener)."""
        scheme = "mqtts" if self.config.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise BrokerError("the broker has not been started yet: no working directory")
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def log_tail(self, nchars: int = 2000) -> str:
        """The end of the broker's log (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-nchars:]
        except (OSError, BrokerError):
            return ""

    # -- lifecycle -------------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self.running:
            raise BrokerError(f"the broker is already running on {self.url}")
        if self._workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="spargo-mosquitto-")
            self._workdir = Path(self._tempdir.name)
        self._workdir.mkdir(parents=True, exist_ok=True)
        if self._port == 0:
            self._port = free_port(self.host)
        log = self._workdir / "mosquitto.log"
        self._log_offset = log.stat().st_size if log.exists() else 0
        conf = self._workdir / "mosquitto.conf"
        conf.write_text(self.config.render(self._port, self._workdir))
        # stderr goes to a file, not a pipe: a pipe nobody reads could block the broker.
        with open(self._workdir / "stderr.log", "ab") as stderr:
            process = subprocess.Popen(
                [self._executable, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # Ctrl-C reaches us; we stop the broker ourselves
            )
        self._process = process
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _terminate, process, 1.0)
        return process

    def _announced(self) -> bool:
        # Mosquitto logs "... running" once its listeners are open. Waiting for that, not just
        # for the port, keeps another process that holds the port from passing for us.
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return b" running" in log.read()
        except OSError:
            return False

    def _accepts(self) -> bool:
        if not self._announced():
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.2)
            return probe.connect_ex((self.host, self.port)) == 0

    def _check_alive(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            return
        try:
            stderr = (self.workdir / "stderr.log").read_text(errors="replace")
        except OSError:
            stderr = ""
        raise BrokerError(
            f"mosquitto exited with code {process.returncode} on port {self._port}: "
            f"{(stderr.strip() or self.log_tail()).strip()[-1500:]}"
        )

    def _timeout_error(self) -> BrokerError:
        self._stop_process()
        return BrokerError(
            f"mosquitto did not accept connections on {self.host}:{self._port} within "
            f"{self.config.start_timeout_s} s; log: {self.log_tail()}"
        )

    def start(self) -> Self:
        """Start the broker and block until its port accepts connections."""
        process = self._spawn()
        deadline = time.monotonic() + self.config.start_timeout_s
        while not self._accepts():
            self._check_alive(process)
            if time.monotonic() > deadline:
                raise self._timeout_error()
            time.sleep(_POLL_S)
        return self

    async def astart(self) -> Self:
        """Start the broker without blocking the event loop."""
        process = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout_s
        while True:
            self._check_alive(process)
            if not self._announced():
                if loop.time() > deadline:
                    raise self._timeout_error()
                await asyncio.sleep(_POLL_S)
                continue
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 0.5
                )
            except (OSError, TimeoutError):
                if loop.time() > deadline:
                    raise self._timeout_error() from None
                await asyncio.sleep(_POLL_S)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return self

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        _terminate(process, self.config.stop_timeout_s)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def stop(self) -> None:
        """Stop the broker (SIGTERM; SIGKILL after ``stop_timeout_s``). Idempotent.

        The working directory (and the persisted sessions in it) survives until ``close()``,
        so ``start()`` after ``stop()`` brings the same broker back on the same port.
        """
        self._stop_process()

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (for fault-injection tests)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._stop_process()

    def close(self) -> None:
        """Stop the broker and remove its temporary working directory."""
        self._stop_process()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
            self._workdir = self.config.workdir

    async def aclose(self) -> None:
        """Stop without blocking the loop for long: SIGTERM and poll, then close()."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.stop_timeout_s
            for _ in range(int(self.config.stop_timeout_s / _POLL_S) + 1):
                if process.poll() is not None or loop.time() > deadline:
                    break
                await asyncio.sleep(_POLL_S)
        self.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
