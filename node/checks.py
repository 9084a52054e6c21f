"""Checks of user-supplied settings at the boundary: unknown keys (with a did-you-mean hint),
value types from a dataclass's type hints, and numbers in a range.

Each problem is one ``ConfigError`` line naming the key and what would fit. Plain standard
library on purpose: an edge peer pays no import for a validation framework (pydantic costs
~0.2 s and a compiled wheel on a Raspberry Pi for what is here ~100 lines over type hints).
"""

from __future__ import annotations

import difflib
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spargo.node.errors import ConfigError


def is_whole(value: object) -> bool:
    """An integer that is not a bool (TOML ``true`` is no round count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite real number that is not a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when ``name`` is close to one of ``choices``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(table: Mapping[str, Any], known: Iterable[str], section: str) -> None:
    """ConfigError naming each unknown key of ``table`` with a did-you-mean hint."""
    valid = sorted(known)
    unknown = sorted(str(k) for k in set(table) - set(valid))
    if unknown:
        named = ", ".join(f"{k!r}{did_you_mean(k, valid)}" for k in unknown)
        raise ConfigError(f"{section}: unknown key {named}; valid keys: {', '.join(valid)}")


_KINDS = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    Path: "a path (string)",
    type(None): "absent",
}


def type_problem(value: object, hint: object) -> str | None:
    """What ``value`` should be to fit the type ``hint`` (None when it fits, or when the hint
    is one this check does not know: the class checks those itself)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        problems = [type_problem(value, a) for a in options]
        return None if None in problems else " or ".join(p for p in problems if p)
    fits = {
        bool: lambda v: isinstance(v, bool),
        int: is_whole,
        float: is_number,
        str: lambda v: isinstance(v, str),
        Path: lambda v: isinstance(v, str | Path),
    }.get(hint)  # type: ignore[call-overload]
    if fits is None:
        origin = typing.get_origin(hint) or hint
        if origin in (Mapping, dict) and not isinstance(value, Mapping):
            return "a table"
        return None
    return None if fits(value) else _KINDS[hint]  # type: ignore[index]


def check_types(cls: type, values: Mapping[str, Any], section: str) -> None:
    """ConfigError naming the first key of ``values`` whose type does not fit ``cls``'s field."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        problem = type_problem(value, hints.get(key))
        if problem is not None:
            raise ConfigError(f"{section}: {key} must be {problem}, got {value!r}")


def whole_in(value: object, name: str, low: int, high: int | None = None, unit: str = "") -> int:
    """``value`` as an int in ``[low, high]`` (``high`` None: no upper bound), else ConfigError
    naming ``name`` and the range."""
    if not is_whole(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be a whole number {span}{unit}, got {value!r}")
    return int(value)  # type: ignore[call-overload,no-any-return]


def number_in(
    value: object, name: str, low: float, *, open_low: bool = False, unit: str = ""
) -> float:
    """``value`` as a finite float ``>= low`` (``> low`` when ``open_low``), else ConfigError."""
    if not is_number(value) or value < low or (open_low and value == low):  # type: ignore[operator]
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        raise ConfigError(f"{name} must be a finite number {bound}{unit}, got {value!r}")
    return float(value)  # type: ignore[arg-type]
