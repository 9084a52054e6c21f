"""The reports of ``spargo lab``: the files ``spargo sim`` writes, from real peers' metrics.

Each lab peer appends one strict-JSON line per round to ``<workdir>/<peer>.metrics.jsonl``.
:class:`RoundWatcher` reads them as they grow; once every peer has recorded round ``r`` it
makes the round's row (the keys of the simulator's ``rounds.jsonl`` rows that real peers can
measure) and appends it to ``<workdir>/rounds.jsonl``. At the end :func:`write_reports`
writes ``metrics.jsonl`` (every peer's lines), ``summary.json`` and ``accuracy.png``. The
code lives here, not in ``sims`` (``node`` never imports ``sims``); the file formats match.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spargo.node.metrics import strict_json

if TYPE_CHECKING:
    from spargo.node.lab import LabConfig
    from spargo.node.progress import Progress

log = logging.getLogger("spargo.lab")


def _headline(record: Mapping[str, Any]) -> float:
    value = record.get("global_accuracy")
    if value is None:
        value = record.get("accuracy")
    return float(value) if isinstance(value, int | float) else math.nan


def round_row(round_index: int, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One ``rounds.jsonl`` row from every peer's record of ``round_index``."""
    records = list(records)
    accuracy = [a for a in (_headline(r) for r in records) if not math.isnan(a)]
    local = [float(r["accuracy"]) for r in records if isinstance(r.get("accuracy"), int | float)]
    local = [a for a in local if not math.isnan(a)]
    return {
        "round": round_index,
        "peers": len(records),
        "accuracy_mean": round(sum(accuracy) / len(accuracy), 6) if accuracy else None,
        "accuracy_min": round(min(accuracy), 6) if accuracy else None,
        "local_accuracy_mean": round(sum(local) / len(local), 6) if local else None,
        "density": round(sum(float(r.get("density", 1.0)) for r in records) / len(records), 6),
        "bytes_sent_total": sum(int(r.get("bytes_sent", 0)) for r in records),
        "messages_dropped": sum(int(r.get("messages_dropped", 0)) for r in records),
        "silent_peers": sorted(str(r["peer_id"]) for r in records if r.get("silent")),
    }


class RoundWatcher:
    """Follows the peers' metrics files; yields each round's row once every peer has it."""

    def __init__(self, workdir: Path, peer_ids: Iterable[str]) -> None:
        self.workdir = workdir
        self.records: dict[str, dict[int, dict[str, Any]]] = {p: {} for p in peer_ids}
        self._offsets = dict.fromkeys(self.records, 0)
        self.rows: list[dict[str, Any]] = []
        self._out = workdir / "rounds.jsonl"

    def metrics_path(self, peer_id: str) -> Path:
        return self.workdir / f"{peer_id}.metrics.jsonl"

    def poll(self) -> list[dict[str, Any]]:
        """Read what the peers appended; returns (and appends to rounds.jsonl) new rows."""
        for peer_id in self.records:
            self._read(peer_id)
        new = []
        while True:
            r = len(self.rows)
            if not all(r in rounds for rounds in self.records.values()):
                break
            row = round_row(r, (rounds[r] for rounds in self.records.values()))
            self.rows.append(row)
            new.append(row)
            with self._out.open("a") as handle:
                handle.write(strict_json(row, sort_keys=True) + "\n")
        return new

    def _read(self, peer_id: str) -> None:
        path = self.metrics_path(peer_id)
        try:
            with path.open("rb") as handle:
                handle.seek(self._offsets[peer_id])
                data = handle.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self._offsets[peer_id] += len(complete)
        for line in complete.splitlines():
            try:
                record = json.loads(line)
                # A restarted peer may record a round again: the later line wins.
                self.records[peer_id][int(record["round"])] = record
            except (ValueError, KeyError, TypeError):
                log.warning("%s: skipped a malformed metrics line", path)


def write_reports(
    workdir: Path, watcher: RoundWatcher, summary: Mapping[str, Any], plots: bool
) -> list[Path]:
    """``metrics.jsonl``, ``summary.json`` and (``plots``) ``accuracy.png`` in ``workdir``
    beside the ``rounds.jsonl`` the watcher wrote; returns the files."""
    metrics = workdir / "metrics.jsonl"
    with metrics.open("w") as handle:
        for peer_id, rounds in watcher.records.items():
            for r in sorted(rounds):
                handle.write(strict_json({**rounds[r], "peer_id": peer_id}, sort_keys=True) + "\n")
    summary_path = workdir / "summary.json"
    summary_path.write_text(strict_json(dict(summary), indent=2, sort_keys=True) + "\n")
    written = [workdir / "rounds.jsonl", metrics, summary_path]
    if plots and watcher.rows:
        try:
            written.append(plot_accuracy(watcher.rows, workdir / "accuracy.png", summary))
        except ImportError:
            log.warning("no plots: matplotlib is not installed (pip install 'spargo[sim]')")
    return written


def plot_accuracy(rows: list[dict[str, Any]], path: Path, summary: Mapping[str, Any]) -> Path:
    """Mean and worst peer accuracy per round, as the simulator's accuracy plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    x = [r["round"] for r in rows]
    nan = float("nan")
    mean = [nan if r["accuracy_mean"] is None else r["accuracy_mean"] for r in rows]
    worst = [nan if r["accuracy_min"] is None else r["accuracy_min"] for r in rows]
    label = (
        f"lab: {summary.get('nodes')} peers, {summary.get('topology')}, "
        f"{summary.get('method')}, {summary.get('transport')}"
    )
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    ax.set_title(f"accuracy — {label}", fontsize=10)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (fraction correct, global test data)")
    ax.plot(x, mean, marker="o", markersize=3, color="C0", label="mean over peers")
    ax.plot(x, worst, ls="--", marker="v", markersize=3, color="C3", label="worst peer")
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lab_summary(
    lab: LabConfig,
    finals: dict[str, dict[str, Any]],
    wall_s: float,
    restarts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The same keys as ``spargo sim``'s summary, plus what only real peers have: restarts,
    drops by reason (every layer) and the neighbours each peer last found silent."""
    drops: Counter[str] = Counter()
    for final in finals.values():
        drops.update({str(k): int(v) for k, v in dict(final.get("drops") or {}).items()})
    accuracy = [a for a in map(_headline, finals.values()) if not math.isnan(a)] or [math.nan]
    return {
        "nodes": lab.nodes,
        "rounds": lab.rounds,
        "method": lab.method,
        "topology": lab.topology,
        "task": lab.task,
        "transport": lab.transport,
        "seed": lab.seed,
        "accuracy_on": "global",
        "accuracy_mean": round(sum(accuracy) / len(accuracy), 6),
        "accuracy_min": round(min(accuracy), 6),
        "accuracy_max": round(max(accuracy), 6),
        "density": round(
            sum(float(f.get("density", 1.0)) for f in finals.values()) / len(finals), 6
        ),
        "bytes_sent_total": sum(int(f.get("bytes_sent", 0)) for f in finals.values()),
        "messages_sent": sum(int(f.get("messages_sent", 0)) for f in finals.values()),
        "messages_dropped": sum(drops.values()),
        "drops": dict(sorted(drops.items())),
        "send_failures": sum(int(f.get("send_failures", 0)) for f in finals.values()),
        "silent": {p: list(f["silent"]) for p, f in finals.items() if f.get("silent")},
        "restarts": {p: n for p, n in sorted((restarts or {}).items()) if n},
        "swarm": lab.swarm,
        "partition": lab.partition,
        "rounds_completed": {p: int(f.get("round", -1)) + 1 for p, f in finals.items()},
        "wall_s": round(wall_s, 3),
    }


def log_note(text: str) -> None:
    """Where round lines go when the lab is quiet: the log, at info level."""
    log.info("%s", text)


async def follow_rounds(
    watcher: RoundWatcher, progress: Progress, lab: LabConfig, quiet: bool
) -> None:
    """Every half second: new complete rounds become rows, a progress step and a line."""
    while True:
        await asyncio.sleep(0.5)
        report_rounds(watcher.poll(), progress, lab, quiet)


def report_rounds(
    rows: list[dict[str, Any]], progress: Progress, lab: LabConfig, quiet: bool
) -> None:
    for row in rows:
        acc = row["accuracy_mean"]
        text = (
            f"round {row['round'] + 1}/{lab.rounds}: accuracy "
            + ("-" if acc is None else f"{acc:.3f} (min {row['accuracy_min']:.3f})")
            + f", {row['bytes_sent_total'] / 1e6:.2f} MB sent, {row['messages_dropped']} dropped"
            + (
                f", silent neighbours at {','.join(row['silent_peers'])}"
                if row["silent_peers"]
                else ""
            )
        )
        progress.update(row["round"] + 1, status=text.partition(": ")[2][:40])
        if not quiet:
            progress.note(text)
