"""What feeds the dashboard: a swarm's broker (monitor, lab) or a simulation's rounds.

* ``node.watch.watch_swarm(config, traffic=True)`` — presence and status events, plus
  one ``("traffic", receiver, {"from": sender, "bytes": n})`` per gossip chunk seen on the
  swarm's inbox topics (only the envelope's sender header is read), so the page can draw the
  edges that really carry traffic. A broker whose ACL refuses the inboxes to this observer
  still gets a dashboard, without traffic edges (one warning).
* :func:`run_web_monitor` — ``spargo monitor --web``; :func:`lab_dashboard` — the same for
  the lab's own broker; :class:`RoundFeed` — ``spargo sim --web``, fed from the runner's
  per-round callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from spargo.node.errors import ConnectError
from spargo.node.metrics import RoundMetrics
from spargo.node.watch import SwarmEvent, watch_swarm
from spargo.node.watch_view import SwarmView
from spargo.node.web.options import WebOptions
from spargo.node.web.state import WebState

LOG = logging.getLogger(__name__)


async def feed(state: WebState, events: AsyncIterator[SwarmEvent]) -> None:
    """Apply ``events`` to ``state`` until they end (or the task is cancelled)."""
    async for kind, peer_id, payload in events:
        if kind == "traffic" and payload is not None:
            sender, nbytes = payload.get("from"), payload.get("bytes")
            if isinstance(sender, str) and isinstance(nbytes, int):
                state.add_traffic(sender, peer_id, nbytes)
        elif kind in ("presence", "status"):
            state.apply(kind, peer_id, payload)


async def run_web_monitor(config: Any, view: SwarmView, options: WebOptions) -> None:
    """``spargo monitor --web``: serve the dashboard of ``view``'s swarm until cancelled.

    ConnectError when the broker cannot be reached; OSError when the address is taken.
    """
    from spargo.node.web.server import DashboardServer

    state = WebState(view, silent_rounds=options.silent_rounds)
    with DashboardServer(state, options) as server:
        print(f"spargo monitor: dashboard at {server.url} (Ctrl-C to stop)", flush=True)
        await feed(state, watch_swarm(config, traffic=True))


@contextlib.asynccontextmanager
async def lab_dashboard(
    options: WebOptions,
    broker_url: str,
    swarm: str,
    graph: str,
    peer_ids: Sequence[str],
    seed: int = 0,
    credentials: tuple[str, str] | None = None,
) -> AsyncIterator[str]:
    """Serve the dashboard of a lab's swarm (its broker; ``graph``: the peers' topology
    spec, built with ``seed`` as they build it; ``credentials``: the broker user and password
    it reads with) while the lab runs.

    Yields the page's address; stops the server and the watcher on exit.
    """
    from spargo import topology
    from spargo.node.transports.mqtt_config import MqttConfig
    from spargo.node.web.server import DashboardServer

    state = WebState(SwarmView(swarm), silent_rounds=options.silent_rounds)
    state.set_topology(topology.make_graph(graph, len(peer_ids), seed=seed), peer_ids)
    user, password = credentials or (None, None)
    config = MqttConfig(
        url=broker_url, swarm=swarm, connect_timeout_s=5.0, username=user, password=password
    )
    with DashboardServer(state, options) as server:
        print(f"spargo lab: dashboard at {server.url}", file=sys.stderr, flush=True)
        watcher = asyncio.create_task(
            feed(state, watch_swarm(config, traffic=True)), name="lab-web"
        )
        try:
            yield server.url
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectError):
                await watcher


class RoundFeed:
    """``spargo sim --web``: the runner's ``on_round(round, metrics)`` into a WebState.

    Each peer's record becomes the status message a real peer would publish (accuracy on
    ``basis``, "global" or "local"); a peer that sent bytes in a round marks its graph edges
    as carrying traffic (the simulator's per-peer counters, split evenly over its edges).
    """

    def __init__(self, state: WebState, peer_ids: Sequence[str], basis: str = "global") -> None:
        self.state, self.basis = state, basis
        self._sent: dict[str, int] = {}
        self._neighbours: dict[str, list[str]] = {p: [] for p in peer_ids}
        for a, b in state.known_edges:
            self._neighbours.setdefault(a, []).append(b)
            self._neighbours.setdefault(b, []).append(a)
        for peer_id in peer_ids:
            state.apply("presence", peer_id, {"online": True, "updated_at": time.time()})

    def finish(self) -> None:
        """The run is over: every peer has left (as real peers say when they stop)."""
        for peer_id in self._neighbours:
            self.state.apply("presence", peer_id, {"online": False, "updated_at": time.time()})

    def __call__(self, round_index: int, metrics: Sequence[RoundMetrics]) -> None:
        now = time.time()
        for m in metrics:
            accuracy = m.accuracy
            if self.basis == "global" and m.global_accuracy is not None:
                accuracy = m.global_accuracy
            status = {"peer_id": m.peer_id, "round": m.round, "accuracy": accuracy,
                      "loss": m.loss, "density": m.density, "bytes_sent": m.bytes_sent,
                      "bytes_received": m.bytes_received, "drops": m.messages_dropped,
                      "drop_reasons": dict(m.drops), "updated_at": now}  # fmt: skip
            self.state.apply("status", m.peer_id, status)
            sent = m.bytes_sent - self._sent.get(m.peer_id, 0)
            self._sent[m.peer_id] = m.bytes_sent
            neighbours = self._neighbours.get(m.peer_id, [])
            for other in neighbours if sent > 0 else []:
                self.state.add_traffic(m.peer_id, other, sent // len(neighbours))


class SimDashboard:
    """``spargo sim --web``: serve a simulation's dashboard from its per-round callback.

    Starts serving on creation (no-op when ``options`` is None); :meth:`chain` wraps the
    runner's other ``on_round`` callback; :meth:`hold` keeps the page up after the run until
    Ctrl-C when a person is watching (stdin and stdout are terminals), then stops it.
    """

    def __init__(self, options: WebOptions | None, swarm: str, graph: Any = None,
                 peer_ids: Sequence[str] = (), basis: str = "global") -> None:  # fmt: skip
        self.server: Any = None
        self.feed: RoundFeed | None = None
        if options is None:
            return
        from spargo.node.web.server import DashboardServer

        state = WebState(SwarmView(swarm), silent_rounds=options.silent_rounds)
        if graph is not None:
            state.set_topology(graph, peer_ids)
        self.feed = RoundFeed(state, peer_ids, basis)
        self.server = DashboardServer(state, options)
        print(f"spargo sim: dashboard at {self.server.start()}", file=sys.stderr, flush=True)

    def chain(self, other: Any) -> Any:
        """An ``on_round(round, metrics)`` that feeds the page, then calls ``other``."""
        feed = self.feed
        if feed is None:
            return other

        def both(round_index: int, metrics: Sequence[RoundMetrics]) -> None:
            feed(round_index, metrics)
            other(round_index, metrics)

        return both

    def hold(self) -> None:
        if self.server is None or self.feed is None:
            return
        self.feed.finish()
        if sys.stdin.isatty() and sys.stdout.isatty():
            print(f"the dashboard stays at {self.server.url}; Ctrl-C to stop", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
        self.server.stop()
