"""Request signatures between workers and the remediator (docs/api.md "Remediator service").

A request carries ``X-Vigil-Timestamp: <unix seconds>`` and
``X-Vigil-Signature: sha256=<hex HMAC-SHA256 of b"<timestamp>." + body>`` made with the
shared secret. The timestamp is inside the signature, so a captured request cannot be
replayed once it is older (or newer) than ``max_age`` seconds; within that window the
remediator's deduplication makes a replay return the recorded result instead of acting.
Pure functions: the caller says what time it is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Literal

from vigil.errors import VigilError

TIMESTAMP_HEADER = "X-Vigil-Timestamp"
SIGNATURE_HEADER = "X-Vigil-Signature"
MAX_AGE_SECONDS = 300.0
"""How far a request's timestamp may be from the remediator's clock, either way."""

_PREFIX = "sha256="
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")

Reason = Literal["missing", "malformed", "stale", "bad_signature"]


class SignatureInvalid(VigilError):
    """A request is unsigned, badly signed or outside the time window (HTTP 401).

    ``reason`` is one of ``missing``, ``malformed``, ``stale``, ``bad_signature``; the
    message says what was wrong without echoing anything secret.
    """

    status_code = 401

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Vigil-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return _PREFIX + digest


def signed_headers(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    """The two headers that sign ``body`` at time ``now`` (unix seconds)."""
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(
    secret: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    now: float,
    max_age: float = MAX_AGE_SECONDS,
) -> None:
    """Return if ``body`` was signed with ``secret`` within ``max_age`` seconds of ``now``;
    else raise :class:`SignatureInvalid` saying why."""
    if not timestamp_header or not signature_header:
        missing = TIMESTAMP_HEADER if not timestamp_header else SIGNATURE_HEADER
        raise SignatureInvalid("missing", f"unsigned request: the {missing} header is missing")
    timestamp_text = timestamp_header.strip()
    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise SignatureInvalid("malformed", f"malformed {TIMESTAMP_HEADER}: expected unix seconds")
    signature = signature_header.strip()
    if not _SIGNATURE.fullmatch(signature):
        raise SignatureInvalid(
            "malformed", f"malformed {SIGNATURE_HEADER}: expected sha256=<64 hex digits>"
        )
    timestamp = int(timestamp_text)
    if abs(now - timestamp) > max_age:
        when = "past" if timestamp < now else "future"
        raise SignatureInvalid(
            "stale",
            f"stale request: its timestamp is {abs(now - timestamp):.0f} seconds in the {when} "
            f"(at most {max_age:.0f} allowed); check the clocks",
        )
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected, _PREFIX + signature[len(_PREFIX) :].lower()):
        raise SignatureInvalid(
            "bad_signature", "bad signature: the request was not signed with this secret"
        )
