"""Durations: a number of seconds (fractions allowed) or a string like ``30s``, ``2m``, ``1h``."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_MAX_SECONDS = 10 * 365 * 86400.0


def parse_duration(value: object) -> float:
    """Return ``value`` as non-negative seconds, or raise ``ValueError`` saying why."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use seconds or e.g. '30s', '2m', '1h'")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError("a duration is a number of seconds or a string like '30s'")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite, non-negative number of seconds")
    if seconds > _MAX_SECONDS:
        raise ValueError("a duration must be at most ten years")
    return seconds


def _schema(*, positive: bool) -> dict[str, Any]:
    bound = {"exclusiveMinimum": 0} if positive else {"minimum": 0}
    return {
        "anyOf": [
            {"type": "number", **bound, "maximum": _MAX_SECONDS},
            {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)?\s*$"},
        ],
        "description": "Seconds (fractions allowed) or a string like '30s', '2m', '1h';"
        + (" more than zero and" if positive else "")
        + " at most ten years",
    }


Duration = Annotated[
    float, BeforeValidator(parse_duration), WithJsonSchema(_schema(positive=False))
]
"""A pydantic field type for durations, stored as float seconds."""

PositiveDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(gt=0),
    WithJsonSchema(_schema(positive=True)),
]
"""A duration that must be more than zero (published as ``exclusiveMinimum: 0``)."""
