"""Text, JSON and timestamp value types shared by the wire models of every stage."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Control characters (C0, DEL, C1) and the Unicode line and paragraph separators."""


def no_nul(value: str) -> str:
    """``value``, or ``ValueError`` if it holds NUL (which no database stores the same)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def no_control(value: str) -> str:
    """``value``, or ``ValueError`` if it holds a control character."""
    if _CONTROL.search(value) is not None:
        raise ValueError("must not contain control characters (such as a newline or a tab)")
    return value


def _finite_json(value: Any, depth: int = 0) -> Any:
    if depth > 32:
        raise ValueError("nested too deeply (at most 32 levels)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    if isinstance(value, str):
        no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul(str(key))
            _finite_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _finite_json(item, depth + 1)
    return value


# Length constraints come before the character checks: after a validator, pydantic checks a
# length generically ("at most 255 items") and not as a string's ("255 characters").

SafeStr = Annotated[str, AfterValidator(no_nul)]
"""A string that every database can store (no NUL)."""

Text = Annotated[str, StringConstraints(max_length=4096), AfterValidator(no_nul)]
"""Free text (a description, a comment, a reason): at most 4096 characters, no NUL."""

Label = Annotated[str, AfterValidator(no_control)]
"""A tag's name or value: no control characters (they would forge lines in logs)."""

TagValue = Annotated[str, StringConstraints(max_length=1024), AfterValidator(no_control)]
"""A tag's value where the body's model bounds it: at most 1024 characters."""

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(no_control),
]
"""A trimmed, non-empty name of at most 255 characters without control characters (a
metric, a target, a glob on them)."""

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
