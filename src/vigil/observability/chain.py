"""The audit chain's hashing: pure, shared by the live trail and the migration that
chained the rows written before it."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS = hashlib.sha256(b"vigil audit genesis").hexdigest()
"""The link the first row of the chain points back to."""


def _canonical(value: Any) -> Any:
    """``value`` with every number as a float where it fits one, so a row hashes the same
    whichever database gave it back (PostgreSQL's JSONB may turn ``1e16`` into an integer)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return str(value)
        return number if math.isfinite(number) else str(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    try:  # anything else (a datetime) as the JSON column stores it, and reads it back
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return str(value)


def row_hash(
    prev_hash: str,
    *,
    at: datetime,
    actor: str,
    kind: str,
    subject: str,
    before: Any,
    after: Any,
    request_id: str | None,
) -> str:
    """The hash of one audit row, chained to ``prev_hash``."""
    when = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).astimezone(UTC)
    body = json.dumps(
        [
            prev_hash,
            when.isoformat(timespec="microseconds"),
            actor,
            kind,
            subject,
            _canonical(before),
            _canonical(after),
            request_id,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()
