"""The scenarios shipped with spargo (``sims/scenarios/*.toml``), found by name.

They are package data, so ``spargo sim --scenario NAME`` works from an installed wheel in any
directory, not only inside a checkout.
"""

from __future__ import annotations

from pathlib import Path


def shipped_scenarios() -> dict[str, Path]:
    """The scenarios shipped inside the package (``sims/scenarios/*.toml``), by name."""
    from importlib.resources import as_file, files

    folder = files("spargo.sims") / "scenarios"
    with as_file(folder) as path:
        return {p.stem: p for p in sorted(Path(path).glob("*.toml"))}


def shipped_scenario(name: str) -> Path:
    """The file of the shipped scenario ``name``; a ``ValueError`` lists the names otherwise."""
    known = shipped_scenarios()
    if name not in known:
        raise ValueError(
            f"--scenario {name!r} is not a shipped scenario; choose one of "
            f"{', '.join(known)} (or --scenario list)"
        )
    return known[name]
