"""Text and JSON value types shared by the wire models of every stage."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints


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
