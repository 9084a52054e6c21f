"""What the dashboard shows: the terminal monitor's peer view plus history, edges and alerts.

:class:`WebState` wraps a :class:`~spargo.node.watch_view.SwarmView` (the same presence and
status events, the same last-heard, stale and hidden rules, the same rows) and adds what a
page needs: one entry per peer and round (accuracy, loss, MB sent and drops in that round),
the edges of the known graph and those that carried traffic (with when they last did), a
stable position per peer, and alerts. Status messages are peer-supplied: one that is not a
JSON object, or whose fields have the wrong types, is dropped and counted per peer, never
shown. Every method takes the state's lock, so a simulation thread may feed it while the
server thread reads :meth:`WebState.snapshot`.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spargo.node.watch_view import PeerState, SwarmView
from spargo.node.web.layout import graph_edges, graph_positions, spiral_seat

#: Drop reasons (node counters, ``protocol.Reason``) grouped into the classes alerts watch.
DROP_CLASSES: dict[str, frozenset[str]] = {
    "replay": frozenset({"replay"}),
    "auth": frozenset(
        {"unauthenticated", "unknown_key", "sender_mismatch", "hello_unauthenticated"}
    ),
    "malformed": frozenset(
        {"malformed", "oversized", "version", "unknown_type", "nonfinite", "dtype", "shape",
         "chunk", "bad_frame", "bad_envelope", "unexpected_frame", "wrong_swarm"}
    ),
}  # fmt: skip
#: The per-round line charts: swarm mean with a min-max band of each.
SERIES = ("accuracy", "loss", "mb_sent", "drops")
_NUMBER_FIELDS = ("accuracy", "loss", "density", "bytes_sent", "bytes_received", "updated_at")
_DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class Alert:
    """One line of the alerts panel."""

    level: str  # "warn" or "error"
    kind: str  # silent, stale, spike, duplicate, identity, malformed
    peer_id: str
    text: str
    at: float  # wall-clock seconds

    def to_dict(self) -> dict[str, object]:
        return {"level": self.level, "kind": self.kind, "peer_id": self.peer_id,
                "text": self.text, "at": round(self.at, 3)}  # fmt: skip


@dataclass(frozen=True)
class _Last:
    """A peer's previous status, for per-round differences."""

    round: int
    bytes_sent: float | None
    drops: int | None
    reasons: Mapping[str, int]


class WebState:
    """The page state of one swarm; see the module docstring.

    ``silent_rounds``: a peer this many rounds behind the swarm's newest round is called
    silent. ``spike``: this many drops of one class (replay, auth, malformed) in one round
    raise an alert. ``traffic_s``: an edge is drawn stronger for this long after it carried
    traffic. ``max_rounds``: rounds of history kept (the oldest go first).
    """

    def __init__(self, view: SwarmView, *, silent_rounds: int = 3, spike: int = 5,
                 traffic_s: float = 10.0, max_rounds: int = 2000) -> None:  # fmt: skip
        if silent_rounds < 1 or spike < 1 or not traffic_s > 0 or max_rounds < 1:
            raise ValueError(
                f"need silent_rounds >= 1, spike >= 1, traffic_s > 0, max_rounds >= 1; got "
                f"{silent_rounds}, {spike}, {traffic_s}, {max_rounds}"
            )
        self.view = view
        self.silent_rounds, self.spike = silent_rounds, spike
        self.traffic_s, self.max_rounds = traffic_s, max_rounds
        self.lock = threading.RLock()
        self.version = 0  # grows with every accepted or dropped message
        self.malformed: Counter[str] = Counter()
        self.history: dict[int, dict[str, dict[str, float]]] = {}
        self.positions: dict[str, tuple[float, float]] = {}
        self.geographic = False
        self.known_edges: list[tuple[str, str]] = []
        #: (sender, receiver) -> (bytes, last at): per direction, see ``_edges``.
        self.traffic: dict[tuple[str, str], tuple[int, float]] = {}
        self.events: deque[Alert] = deque(maxlen=50)
        self._last: dict[str, _Last] = {}
        self._regressions: dict[str, deque[float]] = {}
        self._graph_seats: list[tuple[float, float]] = []
        self._extra_seats = 0

    # -- input -------------------------------------------------------------------------------

    def set_topology(self, graph: Any, peer_ids: Sequence[str]) -> None:
        """Lay out a known networkx ``graph`` whose nodes ``peer_ids`` sit on (TopologyError
        when they do not fit it; see ``topology.assign_peers``)."""
        from spargo import topology

        node_of = topology.assign_peers(list(peer_ids), graph)
        positions, geographic = graph_positions(graph, node_of)
        with self.lock:
            self.positions.update(positions)
            self._graph_seats = list(positions.values())
            self.geographic = geographic
            self.known_edges = graph_edges(graph, node_of)
            self.version += 1

    def apply(self, kind: str, peer_id: str, payload: dict[str, object] | None) -> bool:
        """Fold one presence or status message in; False when it was malformed (counted)."""
        with self.lock:
            self.version += 1
            problem = malformed(kind, peer_id, payload)
            if problem is not None:
                self.malformed[peer_id] += 1
                if problem.startswith("claims"):
                    self._event("error", "identity", peer_id, f"{peer_id}: status {problem}")
                return False
            assert payload is not None  # malformed() refuses None
            self.view.apply(kind, peer_id, payload)
            self._seat(peer_id)
            if kind == "status":
                self._status(peer_id, payload)
            return True

    def add_traffic(self, sender: str, receiver: str, nbytes: int) -> None:
        """Record that ``nbytes`` went from ``sender`` to ``receiver`` now (edge strength)."""
        if sender == receiver:
            return
        with self.lock:
            self.version += 1
            total, _ = self.traffic.get((sender, receiver), (0, 0.0))
            self.traffic[(sender, receiver)] = (total + max(0, nbytes), self.view.clock())
            self._seat(sender)
            self._seat(receiver)

    def _seat(self, peer_id: str) -> None:
        if peer_id not in self.positions:
            self.positions[peer_id] = spiral_seat(self._extra_seats, self._graph_seats)
            self._extra_seats += 1

    def _status(self, peer_id: str, payload: Mapping[str, object]) -> None:
        r = payload.get("round")
        if not isinstance(r, int):
            return  # a status without a round feeds the table only
        sent = _number(payload.get("bytes_sent"))
        drops = _drops_total(payload.get("drops"))
        reasons = _reasons(payload)
        last = self._last.get(peer_id)
        values = {k: v for k in ("accuracy", "loss") if (v := _number(payload.get(k))) is not None}
        if last is not None and r < last.round:
            self._regressed(peer_id, last.round, r)
        base: tuple[float | None, int | None] = (0.0, 0)
        gap = r + 1
        if last is not None:
            base, gap = (last.bytes_sent, last.drops), max(0, r - last.round)
        if gap:
            if sent is not None and base[0] is not None:
                values["mb_sent"] = max(0.0, sent - base[0]) / 1e6 / gap
            if drops is not None and base[1] is not None:
                values["drops"] = max(0, drops - base[1]) / gap
            if last is not None:
                self._spikes(peer_id, r, drops, reasons, last)
        self.history.setdefault(r, {})[peer_id] = values
        while len(self.history) > self.max_rounds:
            del self.history[min(self.history)]
        self._last[peer_id] = _Last(r, sent, drops, reasons)

    def _spikes(self, peer_id: str, r: int, drops: int | None, reasons: Mapping[str, int],
                last: _Last) -> None:  # fmt: skip
        if reasons:
            for name, members in DROP_CLASSES.items():
                delta = sum(reasons.get(m, 0) - last.reasons.get(m, 0) for m in members)
                if delta >= self.spike:
                    text = f"{peer_id}: {delta} {name} drops by round {r}"
                    self._event("warn", f"spike:{name}", peer_id, text)
        elif drops is not None and last.drops is not None and drops - last.drops >= self.spike:
            self._event("warn", "spike:drops", peer_id,
                        f"{peer_id}: {drops - last.drops} drops by round {r}")  # fmt: skip

    def _regressed(self, peer_id: str, before: int, now_round: int) -> None:
        """A round that goes back: one is a restart, two in a short while two processes."""
        now = self.view.clock()
        times = self._regressions.setdefault(peer_id, deque(maxlen=8))
        times.append(now)
        if sum(1 for t in times if now - t <= _DUPLICATE_WINDOW_S) >= 2:
            text = (f"{peer_id}: rounds go back and forth ({before} then {now_round}); "
                    "two peers may share this id")  # fmt: skip
            self._event("error", "duplicate", peer_id, text)

    def _event(self, level: str, kind: str, peer_id: str, text: str) -> None:
        now = self.view.clock()
        if self.events and (self.events[-1].kind, self.events[-1].peer_id) == (kind, peer_id):
            self.events.pop()  # the same trouble again: keep the newest line only
        self.events.append(Alert(level, kind, peer_id, text, now))

    # -- output ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready dict of everything the page draws (the WebSocket's message).

        Keys: those of ``SwarmView.snapshot`` (``swarm``, ``taken_at``, ``peers``: one row
        per shown peer with the terminal monitor's columns plus ``x``, ``y``, ``malformed``
        and ``rounds_behind``, ``hidden``), ``geographic``, ``edges`` (``a``, ``b``,
        ``graph``, ``bytes``, ``recent`` in [0, 1]), ``series`` (``round`` and, per series,
        ``mean``/``min``/``max`` lists aligned with it, None where no peer reported),
        ``alerts`` (newest first), ``malformed`` (total dropped) and ``version``.
        """
        with self.lock:
            out: dict[str, Any] = self.view.snapshot()
            now = float(out["taken_at"])
            rows: list[dict[str, Any]] = out["peers"]
            shown = [self._last[r["peer_id"]].round for r in rows if r["peer_id"] in self._last]
            newest = max(shown, default=None)  # of shown peers: a hidden ghost is no yardstick
            for row in rows:
                self._decorate(row, newest)
            out.update(
                geographic=self.geographic,
                edges=self._edges(now),
                series=self._series(),
                alerts=[a.to_dict() for a in self._alerts(rows, newest, now)],
                malformed=sum(self.malformed.values()),
                version=self.version,
            )
            return out

    def _decorate(self, row: dict[str, Any], newest: int | None) -> None:
        peer_id = row["peer_id"]
        x, y = self.positions.get(peer_id, (0.0, 0.0))
        last = self._last.get(peer_id)
        row.update(x=round(x, 6), y=round(y, 6), malformed=self.malformed[peer_id])
        row["rounds_behind"] = None if last is None or newest is None else newest - last.round
        row["drops"] = _drops_total(row.get("drops"))
        for key in ("accuracy", "loss", "density"):
            row[key] = _number(row.get(key))  # NaN and Inf are not JSON

    def _edges(self, now: float) -> list[dict[str, Any]]:
        pairs = dict.fromkeys(self.known_edges, True)
        for sender, receiver in self.traffic:
            pair = (min(sender, receiver), max(sender, receiver))
            pairs.setdefault(pair, False)
        out = []
        for (a, b), in_graph in sorted(pairs.items()):
            # An edge is as alive as its quieter direction: gossip still sent to a dead peer's
            # inbox does not make its edges look busy. A one-way arc has one direction only.
            ways = [w for w in (self.traffic.get((a, b)), self.traffic.get((b, a))) if w]
            total = sum(w[0] for w in ways)
            at = min((w[1] for w in ways), default=-math.inf)
            recent = max(0.0, 1.0 - (now - at) / self.traffic_s) if total else 0.0
            out.append({"a": a, "b": b, "graph": in_graph, "bytes": total,
                        "recent": round(recent, 3)})  # fmt: skip
        return out

    def _series(self) -> dict[str, Any]:
        rounds = sorted(self.history)
        out: dict[str, Any] = {"round": rounds}
        for name in SERIES:
            mean: list[float | None] = []
            low: list[float | None] = []
            high: list[float | None] = []
            for r in rounds:
                values = [v[name] for v in self.history[r].values() if name in v]
                mean.append(round(sum(values) / len(values), 6) if values else None)
                low.append(round(min(values), 6) if values else None)
                high.append(round(max(values), 6) if values else None)
            out[name] = {"mean": mean, "min": low, "max": high}
        return out

    def _alerts(self, rows: list[dict[str, Any]], newest: int | None, now: float) -> list[Alert]:
        alerts = []
        anyone_up = any(row["state"] == PeerState.ONLINE.value for row in rows)
        for row in rows:
            peer_id, state = row["peer_id"], row["state"]
            behind = row["rounds_behind"]
            silent = behind is not None and newest is not None and behind >= self.silent_rounds
            if silent and state != PeerState.OFFLINE.value:
                text = f"{peer_id}: silent for {behind} rounds (last round {newest - behind})"
                alerts.append(Alert("warn", "silent", peer_id, text, now))
            if state == PeerState.OFFLINE.value and anyone_up:
                last = "" if row["round"] is None else f" after round {row['round']}"
                text = f"{peer_id}: gone{last} while others run (left, or its connection died)"
                alerts.append(Alert("warn", "gone", peer_id, text, now))
            if state == PeerState.STALE.value:
                text = f"{peer_id}: stale, nothing heard for {row['age_s']:.0f} s"
                alerts.append(Alert("warn", "stale", peer_id, text, now))
        for peer_id, count in sorted(self.malformed.items()):
            text = f"{peer_id}: {count} malformed status message(s) dropped"
            alerts.append(Alert("warn", "malformed", peer_id, text, now))
        return alerts + sorted(reversed(self.events), key=lambda a: -a.at)  # newest first


def malformed(kind: str, peer_id: str, payload: Mapping[str, object] | None) -> str | None:
    """Why a presence or status payload is unusable, or None when it is fine."""
    if payload is None:
        return "is not a JSON object"
    if kind == "presence":
        online = payload.get("online")
        return None if online is None or isinstance(online, bool) else "online is not a boolean"
    if kind != "status":
        return f"has an unknown kind {kind!r}"
    claimed = payload.get("peer_id")
    if claimed is not None and claimed != peer_id:
        return f"claims to come from {str(claimed)[:40]!r}"
    r = payload.get("round")
    if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 0):
        return "round is not a non-negative integer"
    for key in _NUMBER_FIELDS:
        value = payload.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"{key} is not a number"
    drops = payload.get("drops")
    if drops is not None and _drops_total(drops) is None:
        return "drops is not a count or a table of counts"
    reasons = payload.get("drop_reasons")
    if reasons is not None and (not isinstance(reasons, dict) or _drops_total(reasons) is None):
        return "drop_reasons is not a table of counts"
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _drops_total(value: object) -> int | None:
    """A status's ``drops`` (a count, or a table reason -> count) as one count."""
    if isinstance(value, int) and _count(value):
        return value
    if isinstance(value, dict) and all(_count(v) for v in value.values()):
        return sum(int(v) for v in value.values())
    return None


def _reasons(payload: Mapping[str, object]) -> dict[str, int]:
    """Drops per reason, from ``drop_reasons`` or a table-valued ``drops``; {} when absent."""
    for key in ("drop_reasons", "drops"):
        value = payload.get(key)
        if isinstance(value, dict) and _drops_total(value) is not None:
            return {str(k): int(v) for k, v in value.items()}
    return {}
