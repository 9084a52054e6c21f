"""What ``spargo monitor`` knows about a swarm, and how it draws it in a terminal of any width.

:class:`SwarmView` folds presence and status events (``node.watch``) into one row per peer.
Every peer has a *last heard* time: the newest ``updated_at`` its messages carry (wall-clock
seconds, clamped to now), or the arrival time when they carry none. A peer not heard from for
``stale_s`` is shown as stale; after ``hide_s`` it is hidden (a retained ghost from an earlier
run). Time comes from an injected clock, so tests need no sleeps.

:meth:`SwarmView.render` lays the table out for a width: full headers when they fit, short
ones otherwise, and as a last resort it leaves out the least useful columns (and says so).
Every peer-supplied string is drawn as plain text, never parsed as rich markup.
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import RenderableType

COLUMNS = (
    "round",
    "accuracy",
    "loss",
    "density",
    "bytes_sent",
    "bytes_received",
    "drops",
)
#: Status keys shown only when a peer reports them (newer peers: health by reason).
HEALTH = ("drop_reasons", "send_failures", "silent")
DEFAULT_STALE_S = 30.0
DEFAULT_HIDE_S = 300.0
_MAX_TEXT = 12  # longest peer-supplied text shown in a number column


class PeerState(enum.Enum):
    """What the monitor believes about a peer."""

    ONLINE = "online"
    STALE = "stale"  # says (or said) online, but silent for stale_s
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # a status without presence


_STYLE = {
    PeerState.ONLINE: "green",
    PeerState.STALE: "yellow",
    PeerState.OFFLINE: "red",
    PeerState.UNKNOWN: "dim",
}


@dataclass(frozen=True)
class _Column:
    key: str
    header: str
    short: str
    priority: int  # lower is kept longer when the terminal is narrow


_LAYOUT = (
    _Column("peer_id", "peer", "peer", 0),
    _Column("state", "state", "state", 0),
    _Column("round", "round", "rnd", 1),
    _Column("accuracy", "accuracy", "acc", 1),
    _Column("age_s", "age", "age", 2),
    _Column("silent", "silent from", "silent", 2),  # shown only when a peer reports one
    _Column("drops", "drops", "drop", 3),
    _Column("bytes_sent", "sent MB", "sent MB", 4),
    _Column("bytes_received", "received MB", "recv MB", 4),
    _Column("loss", "loss", "loss", 5),
    _Column("density", "density", "dens", 5),
)


@dataclass
class SwarmView:
    """Presence, latest status and last-heard time of each peer of one swarm."""

    swarm: str
    stale_s: float = DEFAULT_STALE_S
    hide_s: float = DEFAULT_HIDE_S
    clock: Callable[[], float] = time.time
    online: dict[str, bool] = field(default_factory=dict)
    status: dict[str, dict[str, object]] = field(default_factory=dict)
    heard_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.stale_s <= self.hide_s:
            raise ValueError(
                f"need 0 < stale_s <= hide_s, got stale_s={self.stale_s}, hide_s={self.hide_s}"
            )

    def apply(self, kind: str, peer_id: str, payload: dict[str, object] | None) -> None:
        """Fold one presence or status message into the view (bad payloads are ignored)."""
        if payload is None:
            return
        if kind == "presence":
            self.online[peer_id] = payload.get("online") is True
        elif kind == "status":
            self.status[peer_id] = payload
        else:
            return
        heard = _stamp(payload.get("updated_at"), self.clock())
        self.heard_at[peer_id] = max(heard, self.heard_at.get(peer_id, heard))

    def state(self, peer_id: str, age_s: float) -> PeerState:
        online = self.online.get(peer_id)
        if online is False:
            return PeerState.OFFLINE
        if age_s > self.stale_s:
            return PeerState.STALE
        return PeerState.ONLINE if online else PeerState.UNKNOWN

    def rows(self) -> list[dict[str, object]]:
        """One dict per shown peer: peer_id, online, state, age_s and the status columns."""
        now = self.clock()
        rows = []
        for peer_id in sorted(self.heard_at, key=_natural):
            age_s = max(0.0, now - self.heard_at[peer_id])
            if age_s > self.hide_s:
                continue
            status = self.status.get(peer_id, {})
            row: dict[str, object] = {
                "peer_id": peer_id,
                "online": self.online.get(peer_id),
                "state": self.state(peer_id, age_s).value,
                "age_s": round(age_s, 3),
            }
            row.update({key: status.get(key) for key in (*COLUMNS, "updated_at")})
            row.update({key: status[key] for key in HEALTH if key in status})
            rows.append(row)
        return rows

    def hidden(self) -> int:
        """How many peers are hidden (silent for more than hide_s)."""
        now = self.clock()
        return sum(1 for t in self.heard_at.values() if now - t > self.hide_s)

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready dict: the swarm, its shown rows and the number hidden."""
        return {
            "swarm": self.swarm,
            "taken_at": self.clock(),
            "peers": self.rows(),
            "hidden": self.hidden(),
        }

    def empty_message(self) -> str | None:
        """One line saying why no peer is shown, or None when some are."""
        if self.rows():
            return None
        hidden = self.hidden()
        if hidden:
            return (
                f"swarm {self.swarm!r} has no live peers: {hidden} silent for more than "
                f"{self.hide_s:g} s (raise --hide-s to show them)"
            )
        return f"swarm {self.swarm!r} has no peers: no presence or status seen"

    def render(self, width: int) -> RenderableType:
        """The table laid out for a terminal ``width`` columns wide (see module docstring)."""
        from rich.console import Group
        from rich.text import Text

        rows = self.rows()
        title = Text(f"swarm {self.swarm}", style="bold", no_wrap=True, overflow="ellipsis")
        summary = _summary(rows, self.hidden())
        message = self.empty_message()
        if message is not None:
            return Group(title, Text(message))
        silent = any(row.get("silent") for row in rows)
        layout = [c for c in _LAYOUT if c.key != "silent" or silent]
        cells = [[_cell(column.key, row.get(column.key)) for column in layout] for row in rows]
        columns, short = _fit(layout, cells, width)
        table = _table(layout, rows, cells, columns, short)
        left_out = [layout[i].short for i in range(len(layout)) if i not in columns]
        if left_out:
            summary += f" · not shown: {', '.join(left_out)} (too narrow)"
        return Group(title, table, Text(summary, style="dim"))


def _stamp(updated_at: object, now: float) -> float:
    """A peer's ``updated_at`` as a usable time (finite, not in the future), else ``now``."""
    if isinstance(updated_at, bool) or not isinstance(updated_at, int | float):
        return now
    if not math.isfinite(updated_at):
        return now
    return min(float(updated_at), now)


def _natural(peer_id: str) -> list[tuple[int, int | str]]:
    """Sort key that puts peer-2 before peer-10."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", peer_id) if p]


def _summary(rows: Sequence[dict[str, object]], hidden: int) -> str:
    counts = {state: 0 for state in PeerState}
    for row in rows:
        counts[PeerState(row["state"])] += 1
    parts = [f"{n} {state.value}" for state, n in counts.items() if n]
    if hidden:
        parts.append(f"{hidden} hidden")
    return ", ".join(parts)


def _cell(key: str, value: object) -> str:
    """The text of one cell (peer-supplied values are clipped, never interpreted)."""
    if value is None:
        return "-"
    if key == "age_s" and isinstance(value, float):
        return f"{value:.0f} s" if value < 600 else f"{value / 60:.0f} min"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and key in ("accuracy", "loss", "density"):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    if isinstance(value, int | float) and key.startswith("bytes"):
        return f"{value / 1e6:.1f}"
    if isinstance(value, dict) and key == "drops":  # a peer that reports drops per reason
        return str(sum(v for v in value.values() if isinstance(v, int)))
    if isinstance(value, list) and key == "silent":  # neighbours that delivered nothing lately
        text = ",".join(str(v) for v in value) or "-"
        return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"
    text = " ".join(str(value).split())
    if key != "peer_id" and len(text) > _MAX_TEXT:
        return text[: _MAX_TEXT - 1] + "…"
    return text


def _fit(layout: Sequence[_Column], cells: list[list[str]], width: int) -> tuple[list[int], bool]:
    """Indices of the columns to show and whether to use short headers, for ``width``."""

    def needed(indices: list[int], short: bool) -> int:
        total = 0
        for i in indices:
            column = layout[i]
            header = column.short if short else column.header
            total += max([len(header), *(len(row[i]) for row in cells)])
        return total + 2 * (len(indices) - 1)  # one space of padding, one of divider

    indices = list(range(len(layout)))
    if needed(indices, short=False) <= width:
        return indices, False
    while needed(indices, short=True) > width:
        droppable = [i for i in indices if layout[i].priority > 0]
        if not droppable:
            break
        indices.remove(max(droppable, key=lambda i: (layout[i].priority, i)))
    return indices, True


def _table(
    layout: Sequence[_Column],
    rows: Sequence[dict[str, object]],
    cells: list[list[str]],
    columns: list[int],
    short: bool,
) -> RenderableType:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True
    )
    for i in columns:
        column = layout[i]
        table.add_column(
            Text(column.short if short else column.header),
            justify="left" if column.priority == 0 else "right",
            no_wrap=column.key != "peer_id",
            overflow="fold",
        )
    for row, row_cells in zip(rows, cells, strict=True):
        style = _STYLE[PeerState(row["state"])]
        shown = [
            Text(row_cells[i], style=style if layout[i].key == "state" else "") for i in columns
        ]
        table.add_row(*shown)
    return table
