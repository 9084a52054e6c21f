"""A sweep's tables and plot: ``sweep.csv``, ``sweep.json``, ``sweep.md`` and ``sweep.png``.

One row per cell (``COLUMNS``, then ``error``: empty, or the one line that says why the cell
failed), rewritten whole after every finished cell so that a stopped sweep leaves its table.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from spargo.sims.plotting import LINE_STYLES, MARKERS, halo_label, halo_style, overlap_groups

#: The table's columns, in order (a cell's summary keys, and its grid values).
COLUMNS = (
    "name",
    "method",
    "topology",
    "seed",
    "faults",
    "accuracy_on",
    "accuracy_mean",
    "global_accuracy_mean",
    "local_accuracy_mean",
    "averaged_model_accuracy",
    "accuracy_min",
    "density",
    "consensus_distance",
    "bytes_sent_total",
    "messages_dropped",
    "wall_s",
)


def write_all(rows: list[dict[str, Any] | None], out: Path) -> None:
    """Every table and the plot of the cells done so far (``None``: not done yet)."""
    done = [r for r in rows if r is not None]
    write_tables(done, out)
    plot_sweep(done, out / "sweep.png")


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    """``sweep.csv``, ``sweep.json`` and ``sweep.md`` (the comparison table; a failed cell
    shows its error). Each is written whole to a temporary file, then renamed into place."""
    columns = (*COLUMNS, "error")
    tmp = out / "sweep.csv.tmp"
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "sweep.csv")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(key, row.get(key)) for key in columns) + " |")
    _replace(out / "sweep.md", "\n".join(lines) + "\n")
    _replace(
        out / "sweep.json",
        json.dumps([{k: r.get(k) for k in columns} for r in rows], indent=2) + "\n",
    )


def _md_cell(key: str, value: Any) -> str:
    if key == "bytes_sent_total" and value is not None:
        return f"{value / 1e6:.2f} MB"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None or value == "":
        return "–"
    return str(value).replace("|", "\\|")


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against MB sent, one line per finished cell; colour = method, line style and
    marker = the rest of the cell (topology, seed, fault set). Cells with the same curve are
    drawn as halos (the first widest, each later one thinner on top) and the legend names
    the cell each repeats, so no line hides another; the legend sits outside the axes."""
    from matplotlib.figure import Figure

    methods = sorted({str(r["method"]) for r in rows})
    others = sorted({_variant(r) for r in rows})
    curves = {
        r["name"]: [(b / 1e6, a) for b, a in r.get("curve", ()) if a is not None] for r in rows
    }
    twins = overlap_groups(curves)
    fig = Figure(figsize=(9, 4.8), dpi=110)
    ax = fig.add_subplot()
    for row in rows:
        points = curves[row["name"]]
        if not points:
            continue
        k = others.index(_variant(row))
        ax.plot(
            *zip(*points),
            color=f"C{methods.index(str(row['method'])) % 10}",
            linestyle=LINE_STYLES[k % len(LINE_STYLES)],
            marker=MARKERS[k % len(MARKERS)],
            label=halo_label(row["name"], twins),
            **halo_style(row["name"], twins),
        )
    failed = sum(1 for r in rows if r.get("error"))
    title = f"sweep: accuracy against traffic ({len(rows)} cells"
    ax.set_title(title + (f", {failed} failed)" if failed else ")"))
    ax.set_xlabel("MB sent by all peers (cumulative, log scale)")
    bases = sorted({str(r.get("accuracy_on")) for r in rows if r.get("accuracy_on")})
    on = bases[0] if len(bases) == 1 else "each cell's basis (see sweep.md)"
    ax.set_ylabel(f"mean accuracy, {on} test data" if len(bases) == 1 else f"mean accuracy, {on}")
    _mb_axis(ax, [x for points in curves.values() for x, _ in points])
    ax.grid(alpha=0.3)
    if twins:
        ax.legend(
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            ncol=1 + len(rows) // 25,  # a long sweep's legend wraps into columns
        )
    fig.savefig(str(path), bbox_inches="tight")


def _mb_axis(ax: Any, xs: list[float]) -> None:
    """A log MB axis with plain-number ticks (0.05, 0.1, 0.2, ...); symlog when a value is 0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if xs and min(xs) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif xs:
        ax.set_xscale("symlog", linthresh=0.01)
    else:
        ax.text(0.5, 0.5, "no finished cell yet", transform=ax.transAxes, ha="center")


def _variant(row: dict[str, Any]) -> str:
    return f"{row.get('topology')}/{row.get('seed')}/{row.get('faults')}"
