"""``NodeConfig``: one frozen description of a peer, from a TOML file and/or flags.

Every field is checked on construction; a bad value raises ``ConfigError`` with one line that
says what is wrong and how to fix it (the CLI prints exactly that line).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from spargo.node.checks import check_keys, check_types, is_number, is_whole
from spargo.node.errors import ConfigError
from spargo.node.methods.registry import node_methods

MODES = ("rounds", "async")
#: The most gossip steps per round ``gossip_steps`` accepts (the wire allows 255).
MAX_GOSSIP_STEPS = 16


@dataclass(frozen=True)
class NodeConfig:
    """Everything one peer needs to know (transport settings live with the transport)."""

    peer_id: str = "peer-0"
    swarm: str = "spargo"
    method: str = "dense"
    #: Method-specific options (``weights_every``, ``alpha``, ``ratio``…), see README.
    method_options: Mapping[str, Any] = field(default_factory=dict)
    mode: str = "rounds"
    rounds: int = 20
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    #: In rounds mode: how long to wait for neighbours after sending before merging anyway
    #: (per gossip step).
    round_deadline_s: float = 10.0
    #: In rounds mode: gossip exchanges per round (Q; docs/algorithms.md §4.10).
    gossip_steps: int = 1
    #: In async mode: seconds between local training bursts and between gossip sends.
    train_period_s: float = 1.0
    gossip_period_s: float = 1.0
    #: In async mode: exponential waits with those means (Poisson clocks) instead of fixed.
    poisson: bool = False
    #: Messages older than this many rounds are dropped (async mode weights the rest).
    max_staleness: int = 5
    eval_every: int = 1
    device: str = "auto"
    #: HMAC swarm keys as {key_id: hex string}; empty = unauthenticated swarm.
    keys: Mapping[int, str] = field(default_factory=dict)
    active_key_id: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    #: Warn when a neighbour has delivered nothing for this many consecutive rounds.
    silent_rounds: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "method_options", MappingProxyType(dict(self.method_options)))
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        _check(
            bool(self.peer_id)
            and "/" not in self.peer_id
            and "+" not in self.peer_id
            and "#" not in self.peer_id,
            f"peer_id {self.peer_id!r} must be non-empty without '/', '+' or '#'",
        )
        _check(
            bool(self.swarm) and "/" not in self.swarm,
            f"swarm {self.swarm!r} must be non-empty without '/'",
        )
        _check(
            self.method in node_methods(),
            f"method {self.method!r} is unknown; use one of {', '.join(node_methods())}",
        )
        _check(self.mode in MODES, f"mode {self.mode!r} is unknown; use 'rounds' or 'async'")
        for name in (
            "rounds",
            "local_steps",
            "batch_size",
            "eval_every",
            "checkpoint_every",
            "silent_rounds",
        ):
            value = getattr(self, name)
            _check(
                is_whole(value) and value >= 1,
                f"{name} must be a whole number >= 1, got {value!r}",
            )
        self._check_gossip_steps()
        lr = self.lr
        _check(
            isinstance(lr, int | float) and 0 <= lr < math.inf,
            f"lr must be a number >= 0 (0: consensus only), got {lr!r}",
        )
        for name in ("round_deadline_s", "train_period_s", "gossip_period_s"):
            value = getattr(self, name)
            _check(
                is_number(value) and value > 0,
                f"{name} must be a positive number, got {value!r}",
            )
        _check(
            is_number(self.momentum) and 0 <= self.momentum < 1,
            f"momentum must be in [0, 1), got {self.momentum!r}",
        )
        _check(
            is_whole(self.max_staleness) and self.max_staleness >= 0,
            f"max_staleness must be a whole number >= 0, got {self.max_staleness!r}",
        )
        _check(
            is_whole(self.seed) and self.seed >= 0,
            f"seed must be a whole number >= 0, got {self.seed!r}",
        )
        for key_id, key in self.keys.items():
            try:
                ok = len(bytes.fromhex(key)) >= 16
            except (ValueError, TypeError):
                ok = False
            _check(
                ok,
                f"key {key_id} must be a hex string of at least 16 bytes "
                "(e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`)",
            )
        _check(
            not self.keys or self.active_key_id in self.keys,
            f"active_key_id {self.active_key_id} is not among the keys {sorted(self.keys)}",
        )

    def _check_gossip_steps(self) -> None:
        q = self.gossip_steps
        _check(
            is_whole(q) and 1 <= q <= MAX_GOSSIP_STEPS,
            f"gossip_steps must be a whole number in 1..{MAX_GOSSIP_STEPS}, got {q!r}",
        )
        _check(
            q == 1 or self.method != "local",
            f"gossip_steps={q} does not apply to method local (it mixes nothing); use 1",
        )
        _check(
            q == 1 or self.mode == "rounds",
            f"gossip_steps={q} needs mode rounds (async gossips on its own clock, "
            "gossip_period_s); use 1",
        )

    def with_overrides(self, **overrides: Any) -> NodeConfig:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def config_from_mapping(data: Mapping[str, Any], *, source: str = "config") -> NodeConfig:
    """Build a ``NodeConfig`` from a mapping (e.g. the ``[node]`` table of a TOML file);
    unknown keys and values of the wrong type are one-line ConfigErrors naming the key."""
    check_keys(data, (f.name for f in fields(NodeConfig)), source)
    check_types(NodeConfig, {k: v for k, v in data.items() if k != "keys"}, source)
    values = dict(data)
    if "keys" in values:
        try:
            values["keys"] = {int(k): v for k, v in values["keys"].items()}
        except (AttributeError, ValueError):
            raise ConfigError(f'{source}: keys must be a table of key_id = "hex"') from None
    try:
        return NodeConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax errors into one-line ``ConfigError``s
    (``what`` names the file in them, e.g. ``--sweep file``)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
