"""Several named scenarios run one after another, with one progress bar, and their curves.

The researcher's comparison in two calls (``sims/examples/`` use it)::

    results = compare({"ring": Scenario(topology="ring"), "complete": Scenario(...)})
    plot_curves(round_curves(results, "accuracy_mean"), "acc.png", title=..., ylabel=...)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spargo.sims.runner import SimResult
    from spargo.sims.scenario import Scenario

Curve = list[tuple[float, float]]


def compare(scenarios: Mapping[str, Scenario], label: str = "runs") -> dict[str, SimResult]:
    """Run each scenario (in order) and return its result under the same name.

    One progress bar on stderr counts the rounds of all runs, with the current run's name,
    accuracy and MB sent, and a line per finished run with the ETA.
    """
    from spargo.node.progress import Progress
    from spargo.sims.runner import run

    total = sum(s.rounds for s in scenarios.values())
    results: dict[str, SimResult] = {}
    done = 0
    with Progress(total, label=label, unit="rounds") as bar:
        for name, scenario in scenarios.items():

            def row(r: dict[str, Any], base: int = done, case: str = name) -> None:
                acc = r["accuracy_mean"]
                shown = "n/a" if acc is None else f"{acc:.3f}"
                mb = r["bytes_sent_total"] / 1e6
                bar.update(base + r["round"] + 1, f"{case}: accuracy {shown}, {mb:.1f} MB")

            results[name] = run(scenario, on_row=row)
            done += scenario.rounds
            bar.note(f"{name}: done ({bar.eta_text()})")
    return results


def round_curves(results: Mapping[str, SimResult], key: str) -> dict[str, Curve]:
    """Per run, ``(round, row[key])`` over the rounds where ``key`` has a value (``key`` is a
    column of ``SimResult.round_stats``: ``accuracy_mean``, ``consensus_distance``, ...)."""
    return {
        name: [(r["round"], r[key]) for r in result.round_stats if r.get(key) is not None]
        for name, result in results.items()
    }


def plot_curves(
    curves: Mapping[str, Curve],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "round (0-based)",
    legend_title: str = "",
    log_y: bool = False,
) -> Path:
    """Draw named curves to a PNG (legend outside the axes; overlapping curves as halos, so
    none hides another: see ``sims.plotting``); returns the path."""
    from matplotlib.figure import Figure

    from spargo.sims.plotting import LINE_STYLES, MARKERS, halo_label, halo_style, overlap_groups

    groups = overlap_groups(dict(curves))
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(curves.items()):
        if not points:
            continue
        ax.plot(
            *zip(*points, strict=True),
            color=f"C{i}",
            linestyle=LINE_STYLES[i % len(LINE_STYLES)],
            marker=MARKERS[i % len(MARKERS)],
            label=halo_label(name, groups),
            **halo_style(name, groups),
        )
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, title=legend_title)
    out = Path(path)
    fig.savefig(str(out), bbox_inches="tight")
    return out
