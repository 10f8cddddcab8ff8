"""The checks constructors make of their arguments, each a one-line ValueError that starts
with the argument's name (`build` prefixes the config node's key). Imports no torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole_number(
    name: str,
    value: Any,
    minimum: int = 1,
    optional: bool = False,
    maximum: int | None = None,
    error: type[Exception] = ValueError,
) -> int | None:
    """An int in [minimum, maximum] (or None when `optional`). `error`: the exception raised,
    ValueError for a constructor (`build` names the node), UserError where `name` is already
    the config key."""
    if value is None and optional:
        return None
    too_big = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
        accepted = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise error(f"{name}: expected a whole number {accepted}{' or null' if optional else ''}, got '{value}'")
    return value


def number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, optional: bool = False) -> float:
    """A finite number in [low, high] (or None when `optional`)."""
    if value is None and optional:
        return None
    if not _is_number(value) or not low <= value <= high:
        where = f" in [{low}, {high}]" if math.isfinite(low) and math.isfinite(high) else ""
        where = where or (f" >= {low}" if math.isfinite(low) else (f" <= {high}" if math.isfinite(high) else ""))
        null = " or null" if optional else ""
        raise ValueError(f"{name}: expected a number{where}{null}, got '{value}'")
    return float(value)


def positive(name: str, value: Any, optional: bool = False) -> float | None:
    """A finite number > 0 (or None when `optional`)."""
    if value is None and optional:
        return None
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name}: expected a number > 0{' or null' if optional else ''}, got '{value}'")
    return float(value)


def open_interval(name: str, value: Any, low: float, high: float) -> float:
    """A number strictly between low and high."""
    if not _is_number(value) or not low < value < high:
        raise ValueError(f"{name}: expected a value in ({low}, {high}), got '{value}'")
    return float(value)


def choice(name: str, value: Any, accepted: Sequence[str]) -> str:
    """One of `accepted`."""
    if str(value) not in accepted:
        raise ValueError(f"{name}: '{value}' is not accepted; choose one of {', '.join(accepted)}")
    return str(value)
