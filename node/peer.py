"""``spargo node``: one real peer, configured from a TOML file and flags.

The tables of the file and how each key is checked: ``node.peer_config`` (see examples/).
Flags override the file. Before connecting, the peer checks everything it can: the
checkpoint directory and metrics file are writable, its data shard is not empty, an existing
checkpoint fits this peer, model and method (``--fresh`` ignores it). Then it waits for its
neighbours (MQTT presence, TCP connections) up to ``[topology] wait_for_neighbours_s``.
Exit status: 0 done; 2 a configuration error, a checkpoint that does not fit or a duplicate
peer id (one line on stderr); 3 no neighbour reachable (``no_neighbours = "exit"``).

Secure by default (README, "Security"): a peer without a swarm key refuses a non-loopback
broker or peer address unless ``--insecure`` is given, and real peers of the D-PSGD family
bound each neighbour's influence (``robust = "clip"``, the coordinate median with exactly two
neighbours) unless their config says otherwise (``node.identity_setup``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from spargo.node.errors import ConfigError, NodeError
from spargo.node.identity_setup import (
    add_security_flags,
    members,
    secure_defaults,
    warn_weak_identity,
)
from spargo.node.methods.registry import method_help
from spargo.node.peer_config import LOG_LEVELS, PeerSetup, load_setup, transport_table
from spargo.node.peer_config import _peers_from as _peers_from  # moved; still importable here
from spargo.node.peer_startup import check_writable, local_data, wait_for_neighbours
from spargo.node.transports.base import AddressBook, Membership, StatusPublisher
from spargo.node.transports.registry import TRANSPORTS
from spargo.node.view import MEMBERSHIP

__all__ = ["PeerSetup", "add_parser", "build_node", "load_setup", "run", "transport_table"]

log = logging.getLogger("spargo.peer")


def build_node(setup: PeerSetup) -> Any:
    """The Node for ``setup`` (model, data shard, view, method, transport)."""
    import torch

    from spargo import topology
    from spargo.node.methods import MethodContext, make_method
    from spargo.node.node import LocalData, Node
    from spargo.node.tasks import load_task
    from spargo.node.training import pick_device
    from spargo.node.transports.registry import make_transport
    from spargo.node.view import build_view, membership_view

    torch.set_num_threads(1)
    config = setup.node
    task = load_task(setup.task, seed=setup.topology_seed)
    train, test = local_data(setup, task.train)
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
    """Run one peer to the end (or until SIGINT/SIGTERM); returns an exit status.

    Everything that can be checked is checked before the transport connects: paths are
    writable, the shard is not empty, the checkpoint fits (or ``--fresh``). A fatal error
    raised inside the task groups (a duplicate peer id) surfaces as itself, one line."""
    from spargo.node.metrics import MetricsSink

    check_writable(setup)
    node = build_node(setup)
    if setup.fresh:
        node.start_fresh()
    else:
        node.resume()
    # After every check that can stop the peer: an error stays the only line it prints.
    warn_weak_identity(setup.node, setup.transport, setup.identity)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, node.stop)
    sink = MetricsSink(setup.metrics_path) if setup.metrics_path else None
    statuses: asyncio.Queue[Any] = asyncio.Queue()

    def on_round(metrics: Any) -> None:
        if sink is not None:  # synchronously, so the line lands before the checkpoint
            sink.write(metrics.to_dict())
        statuses.put_nowait(metrics)

    node._on_round = on_round
    try:
        code = await _serve(node, statuses, setup)
    except BaseExceptionGroup as group:
        raise _first_node_error(group) from None
    finally:
        if sink is not None:
            sink.close()
    if code == 0:
        _print_final(node, setup, print_json)
    return code


async def _serve(node: Any, statuses: asyncio.Queue[Any], setup: PeerSetup) -> int:
    async with node.transport, asyncio.TaskGroup() as group:
        reporter = group.create_task(_report(node, statuses), name="status")
        if not await wait_for_neighbours(node, setup):
            reporter.cancel()
            return 3
        await node.run()
        await statuses.join()
        reporter.cancel()
    return 0


def _first_node_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first ``NodeError`` (or OSError) in a nest of exception groups, else the group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_node_error(exc)
            if inner is not exc:
                return inner
        elif isinstance(exc, NodeError | OSError):
            return exc
    return group


def _print_final(node: Any, setup: PeerSetup, print_json: bool) -> None:
    from spargo.node.metrics import strict_json

    if node.history:
        final = node.history[-1].to_dict()
    else:  # resumed after its last round: nothing left to do, report where it stands
        final = {"peer_id": setup.node.peer_id, "round": node.round - 1}
    final["drops"] = node.all_drops()
    final["checkpoint_failures"] = node.checkpoint_failures
    final["clipped"] = dict(node.clipped)
    if print_json:
        print(strict_json(final, sort_keys=True), flush=True)


async def _report(node: Any, statuses: asyncio.Queue[Any]) -> None:
    """Log each round and publish its status (drops by reason, silent neighbours) for
    ``spargo monitor``; the metrics line was already written by the round's callback."""
    transport = node.transport
    publish = transport.publish_status if isinstance(transport, StatusPublisher) else None
    while True:
        metrics = await statuses.get()
        record = metrics.to_dict()
        log.info("round %d accuracy %.3f", record["round"], record["accuracy"])
        if publish is not None:
            try:
                await publish(status_of(record))
            except NodeError as exc:
                log.warning("status not published: %s", exc)
        statuses.task_done()


def status_of(record: dict[str, Any]) -> dict[str, Any]:
    """The status topic's record for one round (strict JSON once published)."""
    return {
        "peer_id": record["peer_id"],
        "round": record["round"],
        "accuracy": record["accuracy"],
        "loss": record["loss"],
        "density": record["density"],
        "bytes_sent": record["bytes_sent"],
        "bytes_received": record["bytes_received"],
        "drops": record["messages_dropped"],
        "drop_reasons": record["drops"],
        "send_failures": record.get("send_failures", 0),
        "silent": record.get("silent", []),
        "updated_at": time.time(),  # wall clock: the monitor shows age
    }


def add_parser(subparsers: Any) -> None:
    """Register ``spargo node``."""
    p = subparsers.add_parser(
        "node",
        help="run one real peer (MQTT or TCP)",
        description="Run one peer from a TOML config; flags override it.",
    )
    p.add_argument("--config", help="peer TOML file (see examples/)")
    p.add_argument("--peer-id", metavar="ID", help="this peer's id (one of the swarm's peers)")
    p.add_argument(
        "--swarm",
        metavar="NAME",
        help="swarm name: MQTT topics and every frame carry it (others are dropped)",
    )
    p.add_argument("--method", help=method_help(simulator=False))
    p.add_argument("--rounds", type=int, metavar="N", help="rounds to run (rounds mode)")
    p.add_argument(
        "--gossip-steps", type=int, metavar="Q", help="gossip exchanges per round (1..16)"
    )
    p.add_argument(
        "--checkpoint-dir", metavar="DIR", help="write checkpoints here and resume from them"
    )
    p.add_argument(
        "--fresh", action="store_true", help="ignore an existing checkpoint and start at round 0"
    )
    p.add_argument(
        "--transport",
        choices=tuple(TRANSPORTS),
        help="; ".join(f"{kind}: {spec.help}" for kind, spec in TRANSPORTS.items()),
    )
    p.add_argument("--broker", help="mqtt://HOST:PORT (MQTT transport)")
    p.add_argument(
        "--listen",
        help="HOST:PORT this TCP peer listens on (default: its own entry in [transport] peers)",
    )
    p.add_argument("--username", help="MQTT user name (MQTT transport)")
    p.add_argument(
        "--password",
        help="visible to every user of the host: prefer [transport] password_file or the "
        "SPARGO_MQTT_PASSWORD environment variable",
    )
    p.add_argument("--graph", help="topology: generator name or graph file")
    p.add_argument("--peers", help="comma-separated peer ids of the swarm")
    p.add_argument("--task", help="digits, synthetic, mnist:PATH, module:function")
    p.add_argument("--partition", help="iid, dirichlet:ALPHA or shards:K (default iid)")
    p.add_argument("--metrics", help="append per-round metrics as JSON lines to this file")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="log verbosity (default info)")
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
            "gossip_steps": args.gossip_steps,
            "checkpoint_dir": args.checkpoint_dir,
        },
        "transport": {
            "kind": args.transport,
            "url": args.broker,
            "username": args.username,
            "password": args.password,
            **_listen(args.listen),
        },
        "topology": {"graph": args.graph, "peers": _peer_list(args.peers)},
        "task": {"name": args.task, "partition": args.partition},
        "identity": {"key": args.identity_key, "roster": args.roster, "swarm_key": args.swarm_key},
        "insecure": args.insecure,
        "fresh": args.fresh,
        "metrics": args.metrics,
        "log_level": args.log_level,
    }
    setup = load_setup(args.config, flags)
    logging.basicConfig(
        level=setup.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {setup.node.peer_id} %(levelname)s %(message)s",
    )
    return run_event_loop(run_peer(setup, print_json=args.json))


def _peer_list(text: str | None) -> list[str] | None:
    """``--peers a,b,c`` as a list; ConfigError for an empty list or an empty id."""
    if text is None:
        return None
    peers = [p.strip() for p in text.split(",")]
    if not all(peers):
        raise ConfigError(f"--peers {text!r} must be comma-separated peer ids, none empty")
    return peers


def _listen(text: str | None) -> dict[str, Any]:
    """``--listen HOST:PORT`` as the TCP table's ``host`` and ``port``."""
    if text is None:
        return {}
    from spargo.node.transports.tcp_wire import parse_address

    try:
        host, port = parse_address(text)
    except ValueError as exc:
        raise ConfigError(f"--listen: {exc}") from None
    return {"host": host, "port": port}


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
