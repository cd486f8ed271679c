"""Validators for the fields of geometry YAML files: one clear ``DataError`` per bad value."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ctblend.io import DataError

__all__ = ["count", "flag", "number", "numbers", "parse_angles"]


def flag(source: object, key: str, value: Any) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise DataError(f"{source}: {key} is {value!r}; expected true or false")
    return value


def number(source: object, key: str, value: Any, positive: bool = True) -> float:
    """A finite number (``positive``: > 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{source}: {key} is {value!r}; expected a number")
    if positive and value <= 0:
        raise DataError(f"{source}: {key} is {value!r}; expected a positive number")
    return float(value)


def count(source: object, key: str, value: Any) -> int:
    """A positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{source}: {key} is {value!r}; expected a positive int")
    return value


def numbers(source: object, key: str, value: Any, n: int, positive: bool = True) -> tuple:
    """``n`` numbers: a list of ``n``, or one number repeated ``n`` times."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise DataError(f"{source}: {key} is {list(value)!r}; expected {n} numbers")
        return tuple(number(source, key, v, positive) for v in value)
    return (number(source, key, value, positive),) * n


def parse_angles(source: object, value: Any, arc: float) -> tuple[float, ...]:
    """The YAML ``angles`` entry → explicit angles in degrees.

    An int spreads that many views evenly over ``[0, arc)``; a list gives them in degrees; a
    mapping ``{count, start_deg, stop_deg}`` spreads ``count`` over ``[start, stop)``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise DataError(f"{source}: angles is {value}; expected at least one view")
        return tuple(float(a) for a in np.arange(value) * (arc / value))
    if isinstance(value, Mapping):
        unknown = set(value) - {"count", "start_deg", "stop_deg"}
        if unknown or "count" not in value:
            raise DataError(
                f"{source}: angles is {dict(value)!r}; expected {{count, start_deg, stop_deg}}"
            )
        n = count(source, "angles count", value["count"])
        start = number(source, "angles start_deg", value.get("start_deg", 0.0), positive=False)
        stop = number(source, "angles stop_deg", value.get("stop_deg", start + arc), False)
        if stop <= start:
            raise DataError(f"{source}: angles stop_deg {stop} <= start_deg {start}")
        return tuple(float(a) for a in start + np.arange(n) * ((stop - start) / n))
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0:
        return tuple(number(source, "angles", a, positive=False) for a in value)
    raise DataError(
        f"{source}: angles is {value!r}; expected a view count, a list of degrees or "
        "{count, start_deg, stop_deg}"
    )
