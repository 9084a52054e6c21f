"""``spargo sim``'s scenario flags, generated from the ``Scenario`` fields' metadata.

Every field gets ``--field-name`` (underscores as dashes) unless its metadata says
``cli=False`` (``faults``: Python objects) or names another ``flag`` (``method_options``:
``--option KEY=VALUE``). The value's type comes from the field's annotation; booleans get
``--x``/``--no-x``; ``kind`` picks a parser for structured values. A field added to
``Scenario`` without metadata still gets a flag, with a generic help text.
"""

from __future__ import annotations

import argparse
from dataclasses import Field, fields
from typing import Any

from spargo.sims.scenario import Scenario

GROUP_TITLES = {"run": "scenario", "timing": "timing", "faults": "faults"}


def scenario_flags() -> list[tuple[Field[Any], str]]:
    """(field, flag) for every scenario field that has a flag."""
    out = []
    for f in fields(Scenario):
        if f.metadata.get("cli", True):
            out.append((f, f.metadata.get("flag", "--" + f.name.replace("_", "-"))))
    return out


def add_scenario_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per scenario field, in argument groups; each flag's dest is the field's
    name and its default ``None`` (= not given, the file's or the scenario's value holds)."""
    groups: dict[str, Any] = {}
    for f, flag in scenario_flags():
        group_name = f.metadata.get("group", "run")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(GROUP_TITLES.get(group_name))
        group = groups[group_name]
        help_text = f.metadata.get("help", f"scenario field {f.name}")
        annotation = str(f.type)
        kw: dict[str, Any] = {"dest": f.name, "help": _with_default(help_text, f), "default": None}
        kw["metavar"] = f.metadata.get("metavar", _metavar(f.name, annotation))
        kind = f.metadata.get("kind")
        if kind in ("event", "options"):
            kw.update(action="append", type=_PARSERS[kind])
        elif kind is not None:
            kw["type"] = _PARSERS[kind]
        elif annotation.startswith("bool"):
            kw["action"] = argparse.BooleanOptionalAction
            del kw["metavar"]
        elif annotation.startswith("int"):
            kw["type"] = int
        elif annotation.startswith("float"):
            kw["type"] = float
        group.add_argument(flag, **kw)


def _metavar(name: str, annotation: str) -> str:
    """A short placeholder: the unit for measured values, N for counts, SPEC for text."""
    for suffix, unit in (("_ms", "MS"), ("_mbps", "MBPS"), ("_s", "SEC")):
        if name.endswith(suffix):
            return unit
    if annotation.startswith("int"):
        return "N"
    if annotation.startswith("float"):
        return "X"
    return "SPEC"


def _with_default(help_text: str, f: Field[Any]) -> str:
    """The help, plus the scenario's default when it is a plain value the help omits."""
    default = f.default
    plain = isinstance(default, int | float | str) and not isinstance(default, bool)
    if not plain or default == "" or "default" in help_text:
        return help_text
    return f"{help_text} (default {default})"


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario values given as flags (field name -> value); ``--option`` excluded."""
    out = {}
    for f, _flag in scenario_flags():
        value = getattr(args, f.name, None)
        if value is None or f.metadata.get("kind") == "options":
            continue
        out[f.name] = tuple(value) if f.metadata.get("kind") == "event" else value
    return out


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE as int, float, bool (true/false) or text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"--option {text!r} must look like KEY=VALUE (e.g. weights_every=3)"
        )
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    return key, raw


def _groups(text: str) -> tuple[tuple[int, ...], ...]:
    try:
        return tuple(tuple(int(p) for p in side.split(",")) for side in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--partition-groups {text!r} must list peer numbers per side, e.g. 0,1,2/3,4,5"
        ) from None


def _event(text: str) -> dict[str, Any]:
    parts = text.split(":")
    try:
        if not 2 <= len(parts) <= 4:
            raise ValueError
        event: dict[str, Any] = {"peer": int(parts[0]), "round": int(parts[1])}
        if len(parts) > 2:
            event["action"] = parts[2]
        if len(parts) > 3:
            event["downtime"] = int(parts[3])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--churn-events {text!r} must look like PEER:ROUND[:ACTION[:DOWNTIME]] "
            "(e.g. 3:5:fail:2)"
        ) from None
    return event


_PARSERS: dict[str, Any] = {
    "pair": str,
    "groups": _groups,
    "event": _event,
    "options": parse_option,
}
