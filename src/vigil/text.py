"""Text, JSON and timestamp value types shared by the wire models of every stage."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _finite_json(value: Any, depth: int = 0) -> Any:
    if depth > 32:
        raise ValueError("nested too deeply (at most 32 levels)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(str(key))
            _finite_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _finite_json(item, depth + 1)
    return value


SafeStr = Annotated[str, AfterValidator(_no_nul)]
"""A string that every database can store (no NUL)."""

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_no_nul),
]
"""A trimmed, non-empty name of at most 255 characters."""

JsonObject = Annotated[dict[str, Any], AfterValidator(_finite_json)]
"""A JSON object whose numbers are finite and whose strings are storable."""


def _iso_8601(value: Any) -> Any:
    """Only ISO 8601 date-times: pydantic would also take a number (or a numeric string) as
    Unix seconds and a bare date as midnight, so ``start_time=2026`` meant 1970.

    A cheap look at the shape (``YYYY-MM-DDTHH...``); pydantic parses the rest.
    """
    if isinstance(value, str):
        if len(value) > 10 and value[4] == "-" and value[10] in "Tt ":
            return value
    elif isinstance(value, datetime):
        return value
    raise ValueError("must be an ISO 8601 date and time, e.g. 2026-01-19T12:00:00Z")


def _as_utc(value: datetime) -> datetime:
    """A timestamp in UTC (naive ones are taken to be UTC); a 422 if it has no UTC form."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise ValueError("timestamp is out of range once converted to UTC") from exc


UtcTimestamp = Annotated[
    datetime,
    BeforeValidator(_iso_8601),
    AfterValidator(_as_utc),
    Field(description="ISO 8601 date and time; without an offset it is taken to be UTC"),
]
"""A timestamp (body field or query parameter), converted to UTC, so the database never
sees an unusable one."""
