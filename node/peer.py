"""``spargo node``: one real peer, configured from a TOML file and flags.

The file has four tables (see examples/): ``[node]`` (a ``NodeConfig``: peer id, swarm,
method, rounds, checkpoint directory…), ``[transport]`` (``kind = "mqtt"`` or ``"tcp"`` and
its address and credentials), ``[topology]`` (``graph`` = generator name or graph file,
``peers`` = the swarm's peer ids or ``count`` = N for ids ``peer-0..N-1`` — a graph file's
node labels are its peer ids by default, and must match ``peers`` exactly — ``seed``,
``sampler``) and ``[task]`` (``name``, and ``shards`` / ``shard`` for a seeded IID slice),
plus ``[identity]`` (``key``, ``roster``, ``swarm_key``: files from ``spargo keys``, see
``node.identity``). Flags override the file. Errors are one line; the exit status is 2.

Secure by default (README, "Security"): a peer without a swarm key refuses a non-loopback
broker or peer address unless ``--insecure`` is given, and real peers of the D-PSGD family
clip each neighbour's influence (``robust = "clip"``) unless their config says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spargo.node.config import NodeConfig, config_from_mapping, load_toml
from spargo.node.errors import ConfigError, NodeError
from spargo.node.identity import IdentityConfig
from spargo.node.identity_setup import (
    add_security_flags,
    check_secure,
    members,
    secure_defaults,
    warn_weak_identity,
    with_swarm_key,
)
from spargo.node.methods.registry import method_help, method_spec, node_methods
from spargo.node.transports.base import AddressBook, Membership, StatusPublisher
from spargo.node.transports.registry import TRANSPORTS, split_table
from spargo.node.view import MEMBERSHIP

log = logging.getLogger("spargo.peer")

LOG_LEVELS = ("debug", "info", "warning", "error")


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
    metrics_path: str | None = None
    log_level: str = "info"
    startup_wait_s: float = 30.0
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    insecure: bool = False


def _peers_from(table: Mapping[str, Any], graph: str) -> tuple[str, ...]:
    from spargo import topology

    if "peers" in table:
        peers = table["peers"]
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ConfigError('[topology] peers must be a list of peer ids, e.g. ["a", "b"]')
        return tuple(peers)
    if "count" not in table and "prefix" not in table:
        labels = topology.graph_peer_ids(graph)  # a graph file's labels name its peers
        if labels is not None:
            return tuple(labels)
    count = table.get("count") or topology.graph_size_from_spec(graph)
    if not isinstance(count, int) or count < 2:
        raise ConfigError("[topology] needs peers = [...] or count = N (N >= 2)")
    prefix = table.get("prefix", "peer-")
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


def load_setup(path: str | None, flags: Mapping[str, Any]) -> PeerSetup:
    """Merge the TOML file (if any) with flags; every problem is a one-line ConfigError."""
    data: dict[str, Any] = dict(load_toml(path)) if path else {}
    tables = ("node", "transport", "topology", "task", "log", "metrics", "identity")
    unknown = sorted(set(data) - set(tables))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(unknown)}; "
            f"use {', '.join(f'[{t}]' for t in tables)}"
        )
    node_table = dict(data.get("node", {}))
    node_table.update({k: v for k, v in flags.get("node", {}).items() if v is not None})
    transport = dict(data.get("transport", {}))
    transport.update({k: v for k, v in flags.get("transport", {}).items() if v is not None})
    topo = dict(data.get("topology", {}))
    topo.update({k: v for k, v in flags.get("topology", {}).items() if v is not None})
    task = dict(data.get("task", {}))
    task.update({k: v for k, v in flags.get("task", {}).items() if v is not None})
    level = flags.get("log_level") or data.get("log", {}).get("level", "info")
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level {level!r} is unknown; use one of {', '.join(LOG_LEVELS)}")
    identity_table = dict(data.get("identity", {}))
    identity_table.update({k: v for k, v in flags.get("identity", {}).items() if v is not None})
    identity = IdentityConfig.from_table(identity_table, path or "flags")
    config = config_from_mapping(with_swarm_key(node_table, identity), source=path or "flags")
    graph = str(topo.get("graph", "ring"))
    if graph == MEMBERSHIP:
        _check_membership(config, task, topo)
        peers: tuple[str, ...] = (config.peer_id,)
    else:
        peers = _peers_from(topo, graph)
    if config.peer_id not in peers:
        raise ConfigError(
            f"peer_id {config.peer_id!r} is not among [topology] peers ({', '.join(peers[:8])}…)"
        )
    if not transport:
        raise ConfigError('no [transport] table: add kind = "mqtt" and url, or kind = "tcp"')
    setup = PeerSetup(
        node=config,
        transport=transport,
        graph=graph,
        peers=peers,
        topology_seed=int(topo.get("seed", 0)),
        sampler=str(topo.get("sampler", "membership:3" if graph == MEMBERSHIP else "all")),
        task=str(task.get("name", "digits")),
        shards=int(task.get("shards", len(peers))),
        shard=int(task.get("shard", peers.index(config.peer_id))),
        metrics_path=flags.get("metrics") or data.get("metrics", {}).get("path"),
        log_level=level,
        startup_wait_s=float(topo.get("wait_for_neighbours_s", 30.0)),
        identity=identity,
        insecure=bool(flags.get("insecure")),
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


def build_node(setup: PeerSetup) -> Any:
    """The Node for ``setup`` (model, data shard, view, method, transport)."""
    import torch

    from spargo import topology
    from spargo.node.methods import MethodContext, make_method
    from spargo.node.node import LocalData, Node
    from spargo.node.tasks import iid_shard, load_task, local_split
    from spargo.node.training import pick_device
    from spargo.node.transports.registry import make_transport
    from spargo.node.view import build_view, membership_view

    torch.set_num_threads(1)
    config = setup.node
    task = load_task(setup.task, seed=setup.topology_seed)
    shard = iid_shard(task.train, setup.shards, setup.shard, setup.topology_seed)
    train, test = local_split(shard, 0.2, setup.topology_seed + setup.shard)
    transport = make_transport(transport_table(setup), config.peer_id, config.swarm)
    credentials = setup.identity.credentials(config.peer_id, bool(config.keys))
    if setup.graph == MEMBERSHIP:
        view = membership_view(
            config.peer_id,
            members(_membership_of(transport), credentials.roster),
            k=_membership_k(setup.sampler),
            seed=setup.topology_seed,
        )
    else:
        graph = topology.make_graph(setup.graph, len(setup.peers), seed=setup.topology_seed)
        if graph.number_of_nodes() != len(setup.peers):
            raise ConfigError(
                f"the graph has {graph.number_of_nodes()} nodes but [topology] names "
                f"{len(setup.peers)} peers; make them agree"
            )
        view = build_view(
            graph, setup.peers, config.peer_id, sampler=setup.sampler, seed=setup.topology_seed
        )
    membership = setup.graph == MEMBERSHIP
    config = secure_defaults(config, None if membership else len(view.neighbours))
    model = task.model_factory(setup.topology_seed).to(pick_device(config.device))
    ctx = MethodContext(
        model=model,
        peer_id=config.peer_id,
        weights=view.weights,
        seed=setup.topology_seed,
        rounds=config.rounds,
        options=config.method_options,
    )
    method = make_method(config.method, ctx)
    return Node(
        config,
        model,
        LocalData(train, test, task.test),
        view,
        transport,
        method,
        initial_seq=time.time_ns() // 1000,  # each life has its own boot id, too
        credentials=credentials,
    )


def transport_table(setup: PeerSetup) -> dict[str, Any]:
    """The ``[transport]`` table; a TCP one without ``hello_keys`` gets the ``[node]`` keys."""
    table = dict(setup.transport)
    if table.get("kind") == "tcp" and setup.node.keys and "hello_keys" not in table:
        table["hello_keys"] = dict(setup.node.keys)
        table["hello_key_id"] = setup.node.active_key_id
    return table


def _membership_of(transport: object) -> Callable[[], set[str]]:
    """Who is in the swarm now: MQTT presence, or the TCP address book (grows by HELLOs)."""
    if isinstance(transport, Membership):
        return transport.online_peers
    if isinstance(transport, AddressBook):
        book = transport.address_book
        return lambda: set(book())
    raise ConfigError('graph = "membership" needs a transport that knows its peers (mqtt, tcp)')


def _membership_k(sampler: str) -> int:
    _, _, k = sampler.partition(":")
    try:
        return int(k or 3)
    except ValueError:
        raise ConfigError(f"sampler {sampler!r}: use membership:K with a whole K") from None


async def run_peer(setup: PeerSetup, *, print_json: bool = False) -> int:
    """Run one peer to the end (or until SIGINT/SIGTERM); returns an exit status."""
    node = build_node(setup)
    warn_weak_identity(setup.node, setup.transport, setup.identity)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, node.stop)
    statuses: asyncio.Queue[Any] = asyncio.Queue()
    node._on_round = statuses.put_nowait
    async with node.transport, asyncio.TaskGroup() as group:
        reporter = group.create_task(_report(node, statuses, setup), name="status")
        await _wait_for_neighbours(node, setup.startup_wait_s)
        await node.run()
        await statuses.join()
        reporter.cancel()
    if node.history:
        final = node.history[-1].to_dict()
    else:  # resumed after its last round: nothing left to do, report where it stands
        final = {"peer_id": setup.node.peer_id, "round": node.round - 1}
    final["drops"] = dict(node.counters.drops)
    final["clipped"] = dict(node.clipped)
    if print_json:
        print(json.dumps(final, sort_keys=True), flush=True)
    return 0


async def _wait_for_neighbours(node: Any, timeout_s: float) -> None:
    """On a broker, wait (bounded) until the neighbours are online, so round 0 is not lost."""
    if not isinstance(node.transport, Membership):
        return
    online = node.transport.online_peers
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    wanted = set(node.view.neighbours)
    while loop.time() < deadline and not wanted <= online():  # noqa: ASYNC110 - presence is a set
        await asyncio.sleep(0.1)
    missing = wanted - online()
    if missing:
        log.warning("starting without %s (not online after %.0f s)", sorted(missing), timeout_s)


async def _report(node: Any, statuses: asyncio.Queue[Any], setup: PeerSetup) -> None:
    """Write each round's metrics as a JSON line and publish a status for `spargo monitor`."""
    # A few hundred bytes a round: a blocking append is cheaper than a thread hop.
    sink = Path(setup.metrics_path).open("a") if setup.metrics_path else None  # noqa: ASYNC230, SIM115
    transport = node.transport
    publish = transport.publish_status if isinstance(transport, StatusPublisher) else None
    try:
        while True:
            metrics = await statuses.get()
            record = metrics.to_dict()
            log.info("round %d accuracy %.3f", record["round"], record["accuracy"])
            if sink is not None:
                sink.write(json.dumps(record, sort_keys=True) + "\n")
                sink.flush()
            if publish is not None:
                status = {
                    "peer_id": record["peer_id"],
                    "round": record["round"],
                    "accuracy": record["accuracy"],
                    "loss": record["loss"],
                    "density": record["density"],
                    "bytes_sent": record["bytes_sent"],
                    "bytes_received": record["bytes_received"],
                    "drops": record["messages_dropped"],
                    "updated_at": time.time(),  # wall clock: the monitor shows age
                }
                try:
                    await publish(status)
                except NodeError as exc:
                    log.warning("status not published: %s", exc)
            statuses.task_done()
    finally:
        if sink is not None:
            sink.close()


def add_parser(subparsers: Any) -> None:
    """Register ``spargo node``."""
    p = subparsers.add_parser(
        "node",
        help="run one real peer (MQTT or TCP)",
        description="Run one peer from a TOML config; flags override it.",
    )
    p.add_argument("--config", help="peer TOML file (see examples/)")
    p.add_argument("--peer-id")
    p.add_argument("--swarm")
    p.add_argument("--method", help=method_help(simulator=False))
    p.add_argument("--rounds", type=int)
    p.add_argument("--checkpoint-dir")
    p.add_argument(
        "--transport",
        choices=tuple(TRANSPORTS),
        help="; ".join(f"{kind}: {spec.help}" for kind, spec in TRANSPORTS.items()),
    )
    p.add_argument("--broker", help="mqtt://HOST:PORT (MQTT transport)")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--graph", help="topology: generator name or graph file")
    p.add_argument("--peers", help="comma-separated peer ids of the swarm")
    p.add_argument("--task", help="digits, synthetic, mnist:PATH, module:function")
    p.add_argument("--metrics", help="append per-round metrics as JSON lines to this file")
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    add_security_flags(p)


def run(args: argparse.Namespace) -> int:
    """Entry of ``spargo node``."""
    flags: dict[str, Any] = {
        "node": {
            "peer_id": args.peer_id,
            "swarm": args.swarm,
            "method": args.method,
            "rounds": args.rounds,
            "checkpoint_dir": args.checkpoint_dir,
        },
        "transport": {
            "kind": args.transport,
            "url": args.broker,
            "username": args.username,
            "password": args.password,
        },
        "topology": {"graph": args.graph, "peers": args.peers.split(",") if args.peers else None},
        "task": {"name": args.task},
        "metrics": args.metrics,
        "log_level": args.log_level,
        "identity": {"key": args.identity_key, "roster": args.roster, "swarm_key": args.swarm_key},
        "insecure": args.insecure,
    }
    setup = load_setup(args.config, flags)
    logging.basicConfig(
        level=setup.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {setup.node.peer_id} %(levelname)s %(message)s",
    )
    return run_event_loop(run_peer(setup, print_json=args.json))


def run_event_loop(main: Any) -> int:
    """Run ``main`` on uvloop when installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return int(asyncio.run(main))
    return int(uvloop.run(main))


def main(argv: list[str] | None = None) -> int:
    """Standalone ``python -m node.peer`` (the same as ``spargo node``)."""
    parser = argparse.ArgumentParser(prog="spargo")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["node", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except (ValueError, TypeError, OSError, NodeError) as exc:
        print(f"spargo node: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
