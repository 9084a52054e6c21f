"""Reports of a run: metrics.jsonl, rounds.jsonl, summary.json, PNG plots and a rich table.

Plots use matplotlib's Agg canvas (no pyplot, no display), imported only when plotting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from spargo.node.metrics import RoundMetrics
    from spargo.sims.runner import SimResult

PLOTS = (
    "accuracy.png",
    "accuracy_vs_mb.png",
    "consensus.png",
    "density.png",
    "topology.png",
)


class RunWriter:
    """Streams a run's files as it goes: ``metrics.jsonl`` gets each peer record and
    ``rounds.jsonl`` each round row the moment they exist (flushed, so a killed run leaves
    what it did); ``finish`` writes ``summary.json`` and the plots.

    ``record`` is a runner ``on_record`` callback, ``row`` an ``on_row`` one.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._metrics = (self.out / "metrics.jsonl").open("w")
        self._rounds = (self.out / "rounds.jsonl").open("w")

    def record(self, metrics: RoundMetrics) -> None:
        self._metrics.write(json.dumps(_clean(metrics.to_dict()), sort_keys=True) + "\n")
        self._metrics.flush()

    def row(self, row: dict[str, Any]) -> None:
        self._rounds.write(json.dumps(_clean(row), sort_keys=True) + "\n")
        self._rounds.flush()

    def close(self) -> None:
        self._metrics.close()
        self._rounds.close()

    def finish(self, result: SimResult, *, plots: bool = True) -> list[Path]:
        """Close the streams, write ``summary.json`` (and the plots); returns the files."""
        self.close()
        written = [self.out / "metrics.jsonl", self.out / "rounds.jsonl"]
        written.append(write_summary(result, self.out))
        if result.peer_labels:  # a graph file's labels named the peers: keep the mapping
            written.append(self.out / "peers.json")
            written[-1].write_text(json.dumps(result.peer_labels, indent=1) + "\n")
        if plots and result.round_stats:
            written += plot_run(result, self.out)
        return written


def write_reports(result: SimResult, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write every report of a finished ``result`` into ``out_dir``; returns the files written."""
    writer = RunWriter(out_dir)
    try:
        for m in result.rounds:
            writer.record(m)
        for row in result.round_stats:
            writer.row(row)
    finally:
        writer.close()
    return writer.finish(result, plots=plots)


def write_summary(result: SimResult, out: Path) -> Path:
    """``summary.json``: the summary, the scenario and what the faults did."""
    document = {
        "summary": result.summary,
        "scenario": result.scenario.to_dict(),
        "faults": result.faults,
    }
    path = out / "summary.json"
    path.write_text(json.dumps(_clean(document), indent=2, sort_keys=True) + "\n")
    return path


def _clean(value: Any) -> Any:
    """NaN/inf become null so the files are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    # Tight bounding box: nothing (a long label, a legend beside the axes) gets clipped.
    fig.savefig(str(path), bbox_inches="tight")
    return path


def _legend(ax: Any) -> None:
    """The legend under the axes, where it can cover no data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)


def plot_run(result: SimResult, out: Path) -> list[Path]:
    """The five plots of one run (x: the 0-based round, as in ``rounds.jsonl``)."""
    from spargo import topology
    from spargo.sims.graphs import swarm_graph

    rows = result.round_stats
    label = result.scenario.label
    x = [r["round"] for r in rows]
    acc = [_nan(r["accuracy_mean"]) for r in rows]
    basis = result.summary.get("accuracy_on", "global")
    ylabel = f"accuracy (fraction correct, {basis} test data)"
    paths = []
    fig, ax = _figure(f"accuracy — {label}", "round", "accuracy (fraction correct)")
    for key, colour, marker in (("global", "C0", "o"), ("local", "C1", "s")):
        values = [_nan(r.get(f"{key}_accuracy_mean")) for r in rows]
        tag = "mean, global test set" if key == "global" else "mean, each peer's own split"
        ax.plot(
            x,
            values,
            marker=marker,
            markersize=3,
            color=colour,
            ls="-" if key == basis else ":",
            label=tag + (" (basis)" if key == basis else ""),
        )
    worst = [_nan(r["accuracy_min"]) for r in rows]
    ax.plot(x, worst, ls="--", marker="v", markersize=3, color="C3", label=f"worst peer, {basis}")
    averaged = result.summary.get("averaged_model_accuracy")
    if averaged is not None and x:
        ax.plot([x[-1]], [averaged], marker="*", markersize=10, color="C2", ls="none",
                label="averaged model, global test set")  # fmt: skip
    _legend(ax)
    paths.append(_save(fig, out / "accuracy.png"))
    fig, ax = _figure(f"accuracy vs traffic — {label}", "MB sent by all peers (cumulative)", ylabel)
    ax.plot([r["bytes_sent_total"] / 1e6 for r in rows], acc, marker="o", markersize=3)
    paths.append(_save(fig, out / "accuracy_vs_mb.png"))
    fig, ax = _figure(
        f"consensus distance — {label}", "round", "mean ‖x_i − x̄‖² (squared L2, parameters)"
    )
    cd = [_nan(r["consensus_distance"]) for r in rows]
    if any(c > 0 for c in cd):
        ax.set_yscale("log")
    ax.plot(x, cd, marker="o", markersize=3, label="consensus distance")
    if result.scenario.partition_at is not None:
        split, heal = result.scenario.partition_at
        ax.axvspan(split - 0.5, heal - 0.5, color="red", alpha=0.1, label="partitioned")
        _legend(ax)
    paths.append(_save(fig, out / "consensus.png"))
    fig, ax = _figure(f"density — {label}", "round", "density (fraction of weights kept)")
    ax.plot(x, [r["density"] for r in rows], marker="o", markersize=3)
    ax.set_ylim(0, 1.05)
    paths.append(_save(fig, out / "density.png"))
    s = result.scenario
    graph = swarm_graph(s)
    topology.draw(
        graph, out / "topology.png", title=f"{s.topology} ({graph.number_of_nodes()} peers)"
    )
    paths.append(out / "topology.png")
    return paths


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def summary_table(summaries: Sequence[dict[str, Any]], title: str = "spargo sim") -> Any:
    """A rich ``Table`` with one row per summary that fits 80 columns: one run's name is in
    the title; several runs get a name column (folded when long) and fewer numbers. Both
    accuracies are columns (mean over peers: global test set, own split); the star marks
    the declared basis; ``averaged`` is the averaged model on the global test set."""
    from rich import box
    from rich.table import Table

    bases = sorted({str(s.get("accuracy_on")) for s in summaries if s.get("accuracy_on")})
    basis = bases[0] if len(bases) == 1 else None
    mark = {b: f"{b}*" if b == basis else b for b in ("global", "local")}
    note = f" (* = basis: {basis})" if basis else ""
    table = Table(title=title + note, box=box.SIMPLE_HEAD, pad_edge=False)
    columns = [
        ("global_accuracy_mean", mark["global"]),
        ("local_accuracy_mean", mark["local"]),
        ("averaged_model_accuracy", "averaged"),
        ("accuracy_min", "worst"),
        ("density", "density"),
        ("consensus_distance", "consensus"),
        ("bytes_sent_total", "MB sent"),
        ("messages_dropped", "dropped"),
    ]
    # Wall time is on the line under the table; with names, the rest stays in sweep.md.
    if len(summaries) > 1:
        columns = [("name", "run"), *columns[:2], columns[4], columns[6]]
    for key, header in columns:
        if key == "name":  # long sweep names fold onto more lines rather than lose their end
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for s in summaries:
        cells = [_cell(key, s.get(key)) for key, _ in columns]
        if s.get("error"):  # a failed sweep cell (its error is printed below the table)
            cells[1 if columns[0][0] == "name" else 0] = "failed"
        table.add_row(*cells)
    return table


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key == "bytes_sent_total":
        return f"{value / 1e6:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}" if key == "consensus_distance" else f"{value:.3f}"
    return str(value)
