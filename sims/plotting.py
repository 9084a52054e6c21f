"""Helpers shared by every plot spargo draws: telling overlapping curves apart.

Two runs often produce the same curve (a method that ignores a fault, two seeds that agree).
Drawn plainly, the later line hides the earlier one and the reader counts one run where there
were two. ``overlap_groups`` finds such curves, and ``halo_style`` draws the first of a group
widest and translucent, each later one thinner on top, so every line stays visible.
"""

from __future__ import annotations

from typing import Any

#: Line styles and markers to cycle through next to colours (distinguishable in grey too).
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = "osD^vxP*"


def overlap_groups(curves: dict[str, list[tuple[float, float]]]) -> dict[str, list[str]]:
    """For each curve, the names of the curves it overlaps on the plot (itself included, in
    drawing order): as many points, each within 2 % in MB and 0.005 in accuracy."""

    def close(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
        return len(a) == len(b) and all(
            abs(xa - xb) <= 0.02 * max(abs(xa), abs(xb), 1e-9) and abs(ya - yb) <= 0.005
            for (xa, ya), (xb, yb) in zip(a, b, strict=True)
        )

    groups: list[list[str]] = []
    for name, points in curves.items():
        if not points:
            continue
        group = next((g for g in groups if close(curves[g[0]], points)), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    return {name: group for group in groups for name in group}


def halo_style(name: str, groups: dict[str, list[str]]) -> dict[str, Any]:
    """matplotlib ``plot`` keywords for curve ``name`` of ``overlap_groups``' result: width,
    marker size and transparency by how many overlapping curves are drawn over it."""
    same = groups.get(name, [name])
    behind = len(same) - 1 - same.index(name)
    return {
        "linewidth": 1.6 + 2.4 * behind,
        "markersize": 5 + 3 * behind,
        "alpha": 0.55 if behind else 1.0,
    }


def halo_label(name: str, groups: dict[str, list[str]]) -> str:
    """``name``, or ``name (= first)`` when it repeats the curve of ``first``."""
    first = groups.get(name, [name])[0]
    return name if first == name else f"{name} (= {first})"
