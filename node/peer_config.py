"""The checked set-up of ``spargo node``: TOML tables merged with flags, every key validated.

The file has seven tables (see examples/): ``[node]`` (a ``NodeConfig``), ``[transport]`` (a
registry kind and its settings), ``[topology]`` (``graph``, ``peers`` or ``count``/``prefix``,
``seed``, ``sampler``, ``wait_for_neighbours_s``, ``no_neighbours``), ``[task]`` (``name``,
``shards``/``shard``, ``partition``), ``[log]`` (``level``), ``[metrics]`` (``path``) and
``[identity]`` (``key``, ``roster``, ``swarm_key``: files from ``spargo keys``, see
``node.identity``). Secure by default (README, "Security"): without a swarm key a peer refuses
a non-loopback address unless ``--insecure`` is given.
Secrets can stay out of the file and the command line: ``[node] keys_file``, ``[transport]
password_file`` (both relative to systemd's ``$CREDENTIALS_DIRECTORY`` when set) or the
``SPARGO_MQTT_PASSWORD`` environment variable.
Every table rejects unknown keys with a did-you-mean hint; every value is checked for type
and range here, so a bad one is one ``ConfigError`` line naming the key, before anything runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spargo.node.checks import check_keys, number_in, whole_in
from spargo.node.config import NodeConfig, config_from_mapping, load_toml
from spargo.node.errors import ConfigError
from spargo.node.identity import IdentityConfig
from spargo.node.identity_setup import check_secure, with_swarm_key
from spargo.node.methods.registry import method_spec, node_methods
from spargo.node.transports.base import AddressBook, Membership
from spargo.node.transports.registry import split_table
from spargo.node.view import MEMBERSHIP

LOG_LEVELS = ("debug", "info", "warning", "error")
#: What a peer does when no neighbour is reachable after ``wait_for_neighbours_s``.
NO_NEIGHBOURS = ("exit", "wait")
TABLE_KEYS: Mapping[str, frozenset[str]] = {
    "topology": frozenset(
        {"graph", "peers", "count", "prefix", "seed", "sampler"}
        | {"wait_for_neighbours_s", "no_neighbours"}
    ),
    "task": frozenset({"name", "shards", "shard", "partition"}),
    "log": frozenset({"level"}),
    "metrics": frozenset({"path"}),
}
#: ``[identity]`` is checked by ``IdentityConfig.from_table`` (node/identity.py).
TABLES = ("node", "transport", *TABLE_KEYS, "identity")


@dataclass(frozen=True)
class PeerSetup:
    """Everything ``spargo node`` needs, checked."""

    node: NodeConfig
    transport: Mapping[str, Any]
    graph: str = "ring"
    peers: tuple[str, ...] = ()
    topology_seed: int = 0
    sampler: str = "all"
    task: str = "digits"
    shards: int = 0
    shard: int = -1
    partition: str = "iid"
    metrics_path: str | None = None
    log_level: str = "info"
    startup_wait_s: float = 30.0
    #: ``exit``: no neighbour reachable after ``startup_wait_s`` is exit status 3; ``wait``:
    #: keep waiting (logging each ``startup_wait_s``) until one is.
    no_neighbours: str = "exit"
    #: Ignore (and overwrite) an existing checkpoint instead of resuming from it.
    fresh: bool = False
    #: This peer's signing key, the swarm's roster and swarm key (``spargo keys``).
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    #: ``--insecure``: allow a non-loopback address without a swarm key.
    insecure: bool = False


def _peers_from(table: Mapping[str, Any], graph: str) -> tuple[str, ...]:
    from spargo import topology

    if "peers" in table:
        peers = table["peers"]
        if (
            not isinstance(peers, list)
            or not peers
            or not all(isinstance(p, str) and p for p in peers)
        ):
            raise ConfigError('[topology] peers must be a non-empty list of ids, e.g. ["a", "b"]')
        if len(set(peers)) != len(peers):
            raise ConfigError("[topology] peers lists an id twice")
        return tuple(peers)
    if "count" not in table and "prefix" not in table:
        labels = topology.graph_peer_ids(graph)  # a graph file's labels name its peers
        if labels is not None:
            return tuple(labels)
    count = table.get("count") or topology.graph_size_from_spec(graph)
    if count is None:
        raise ConfigError("[topology] needs peers = [...] or count = N (N >= 2)")
    count = whole_in(count, "[topology] count", 2)
    prefix = table.get("prefix", "peer-")
    if not isinstance(prefix, str):
        raise ConfigError(f"[topology] prefix must be a string, got {prefix!r}")
    return tuple(f"{prefix}{i}" for i in range(count))


def _check_membership(config: NodeConfig, task: Mapping[str, Any], topo: Mapping[str, Any]) -> None:
    """A live swarm has no peer list: check what it needs instead."""
    if config.mode != "async":
        raise ConfigError(
            'graph = "membership" needs mode = "async" under [node]: peers cannot know who '
            "will send to them, so they merge whatever arrives"
        )
    if method_spec(config.method).fixed_neighbours:
        free = [n for n in node_methods() if not method_spec(n).fixed_neighbours]
        raise ConfigError(
            f'graph = "membership" does not work with method "{config.method}" (it keeps a '
            f"copy per fixed neighbour); use {', '.join(free)}"
        )
    sampler = str(topo.get("sampler", "membership:3"))
    if not sampler.startswith("membership"):
        raise ConfigError(f'graph = "membership" needs sampler = "membership:K", not {sampler!r}')
    if "shards" not in task or "shard" not in task:
        raise ConfigError(
            'graph = "membership" has no peer list to shard the data by: set [task] shards = N '
            "and shard = I (this peer's slice)"
        )


def _tables(path: str | None, flags: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each table of the file with the flags laid over it (None flags ignored), keys checked."""
    data: dict[str, Any] = dict(load_toml(path)) if path else {}
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(unknown)}; use "
            + ", ".join(f"[{t}]" for t in TABLES)
        )
    tables: dict[str, dict[str, Any]] = {}
    for name in TABLES:
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name} must be a table ([{name}])")
        table = dict(table)
        overrides = flags.get(name)
        if isinstance(overrides, Mapping):
            table.update({k: v for k, v in overrides.items() if v is not None})
        if name in TABLE_KEYS:
            check_keys(table, TABLE_KEYS[name], f"[{name}]")
        tables[name] = table
    return tables


def _string(table: Mapping[str, Any], key: str, section: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[{section}] {key} must be a non-empty string, got {value!r}")
    return value


def secret_path(value: object, key: str) -> Path:
    """Where the secret file ``value`` is: absolute, or relative to systemd's
    ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``) when set, else to the working directory."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a file name (string), got {value!r}")
    path = Path(value)
    base = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and base:
        path = Path(base) / path
    if not path.is_file():
        raise ConfigError(f"{key}: file {str(path)!r} does not exist")
    return path


def _load_secrets(tables: dict[str, dict[str, Any]]) -> None:
    """Secrets kept out of the config and the command line: ``[node] keys_file`` (a TOML
    file of ``key_id = "hex"`` lines, optionally ``active_key_id``), ``[transport]
    password_file``, or the ``SPARGO_MQTT_PASSWORD`` environment variable (an
    ``EnvironmentFile=``). A value set inline wins."""
    node, transport = tables["node"], tables["transport"]
    if "keys_file" in node:
        data = load_toml(secret_path(node.pop("keys_file"), "[node] keys_file"))
        active = data.pop("active_key_id", None)
        node.setdefault("keys", data)
        if active is not None:
            node.setdefault("active_key_id", active)
    if "password_file" in transport:
        path = secret_path(transport.pop("password_file"), "[transport] password_file")
        transport.setdefault("password", path.read_text().strip())
    env_password = os.environ.get("SPARGO_MQTT_PASSWORD")
    if env_password and transport.get("kind", "mqtt") == "mqtt":
        transport.setdefault("password", env_password)


def load_setup(path: str | None, flags: Mapping[str, Any]) -> PeerSetup:
    """Merge the TOML file (if any) with flags; every problem is a one-line ConfigError."""
    tables = _tables(path, flags)
    _load_secrets(tables)
    level = flags.get("log_level") or tables["log"].get("level", "info")
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level {level!r} is unknown; use one of {', '.join(LOG_LEVELS)}")
    identity = IdentityConfig.from_table(tables["identity"], path or "flags")
    config = config_from_mapping(
        with_swarm_key(tables["node"], identity), source=f"{path or 'flags'} [node]"
    )
    topo, task = tables["topology"], tables["task"]
    graph = _string(topo, "graph", "topology", "ring")
    if graph == MEMBERSHIP:
        _check_membership(config, task, topo)
        peers: tuple[str, ...] = (config.peer_id,)
    else:
        peers = _peers_from(topo, graph)
    if config.peer_id not in peers:
        raise ConfigError(
            f"peer_id {config.peer_id!r} is not among [topology] peers ({', '.join(peers[:8])}…)"
        )
    if not tables["transport"]:
        raise ConfigError('no [transport] table: add kind = "mqtt" and url, or kind = "tcp"')
    shards = whole_in(task.get("shards", len(peers)), "[task] shards", 1)
    no_neighbours = _string(topo, "no_neighbours", "topology", "exit")
    if no_neighbours not in NO_NEIGHBOURS:
        raise ConfigError(f"[topology] no_neighbours must be one of {NO_NEIGHBOURS}")
    metrics_path = flags.get("metrics") or tables["metrics"].get("path")
    if metrics_path is not None and (not isinstance(metrics_path, str) or not metrics_path):
        raise ConfigError(f"[metrics] path must be a file name (string), got {metrics_path!r}")
    setup = PeerSetup(
        node=config,
        transport=tables["transport"],
        graph=graph,
        peers=peers,
        topology_seed=whole_in(topo.get("seed", 0), "[topology] seed", 0),
        sampler=_string(
            topo, "sampler", "topology", "membership:3" if graph == MEMBERSHIP else "all"
        ),
        task=_string(task, "name", "task", "digits"),
        shards=shards,
        shard=whole_in(
            task.get("shard", peers.index(config.peer_id)), "[task] shard", 0, shards - 1
        ),
        partition=_string(task, "partition", "task", "iid"),
        metrics_path=metrics_path,
        log_level=level,
        startup_wait_s=number_in(
            topo.get("wait_for_neighbours_s", 30.0), "[topology] wait_for_neighbours_s", 0.0
        ),
        no_neighbours=no_neighbours,
        fresh=bool(flags.get("fresh", False)),
        identity=identity,
        insecure=bool(flags.get("insecure", False)),
    )
    _check_transport(setup)
    check_secure(setup.node, setup.transport, setup.insecure)
    return setup


def _check_transport(setup: PeerSetup) -> None:
    """Check the ``[transport]`` table now (ConfigError), not when the peer starts."""
    spec, values = split_table(transport_table(setup))
    spec.make_config(values, setup.node.swarm)
    transport = spec.transport_type()
    if setup.graph == MEMBERSHIP and not issubclass(transport, Membership | AddressBook):
        raise ConfigError(
            f'graph = "membership" needs a transport that knows its peers, not {spec.kind!r}'
        )


def transport_table(setup: PeerSetup) -> dict[str, Any]:
    """The ``[transport]`` table as the transport gets it.

    A TCP table without ``hello_keys`` gets the ``[node]`` keys; a TCP peer without ``port``
    listens where its own entry of the address book (``peers``) says, so one file can serve
    every peer of a host (``--peer-id`` picks the entry).
    """
    table = dict(setup.transport)
    if table.get("kind") != "tcp":
        return table
    if setup.node.keys and "hello_keys" not in table:
        table["hello_keys"] = dict(setup.node.keys)
        table["hello_key_id"] = setup.node.active_key_id
    own = (
        table.get("peers", {}).get(setup.node.peer_id)
        if isinstance(table.get("peers"), dict)
        else None
    )
    if "port" not in table and isinstance(own, str):
        from spargo.node.transports.tcp_wire import parse_address

        try:
            host, port = parse_address(own)
        except ValueError as exc:
            raise ConfigError(f"[transport] peers.{setup.node.peer_id}: {exc}") from None
        table["port"] = port
        table.setdefault("host", host)
    return table
