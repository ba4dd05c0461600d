"""The remediator's request signature: one table of headers and what verify() says."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from vigil.remediation.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureInvalid,
    sign,
    signed_headers,
    verify,
)

SECRET = b"s" * 32
BODY = b'{"action_id": 1, "attempt": 1, "action": "restart", "target": "web-01"}'
NOW = 1_760_000_000


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"sha256={expected}"


def test_signed_headers_carry_whole_seconds() -> None:
    headers = signed_headers(SECRET, BODY, NOW + 0.9)
    assert headers == {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: sign(SECRET, NOW, BODY)}


GOOD = sign(SECRET, NOW, BODY)


@pytest.mark.parametrize(
    ("timestamp", "signature", "body", "now", "reason"),
    [
        pytest.param(str(NOW), GOOD, BODY, NOW, None, id="valid"),
        pytest.param(f" {NOW} ", f" {GOOD} ", BODY, NOW, None, id="valid-padded"),
        pytest.param(
            str(NOW),
            GOOD.upper().replace("SHA256=", "sha256="),
            BODY,
            NOW,
            None,
            id="valid-upper-hex",
        ),
        pytest.param(str(NOW), GOOD, BODY, NOW + 300, None, id="valid-at-max-age"),
        pytest.param(str(NOW), GOOD, BODY, NOW - 300, None, id="valid-at-max-future"),
        pytest.param(None, GOOD, BODY, NOW, "missing", id="no-timestamp"),
        pytest.param(str(NOW), None, BODY, NOW, "missing", id="no-signature"),
        pytest.param(None, None, BODY, NOW, "missing", id="unsigned"),
        pytest.param("", GOOD, BODY, NOW, "missing", id="empty-timestamp"),
        pytest.param("12.5", GOOD, BODY, NOW, "malformed", id="fractional-timestamp"),
        pytest.param("-5", GOOD, BODY, NOW, "malformed", id="negative-timestamp"),
        pytest.param("9" * 40, GOOD, BODY, NOW, "malformed", id="huge-timestamp"),
        pytest.param("soon", GOOD, BODY, NOW, "malformed", id="word-timestamp"),
        pytest.param(str(NOW), GOOD[7:], BODY, NOW, "malformed", id="no-prefix"),
        pytest.param(str(NOW), "sha1=" + GOOD[7:], BODY, NOW, "malformed", id="other-algorithm"),
        pytest.param(str(NOW), GOOD[:-1], BODY, NOW, "malformed", id="short-hex"),
        pytest.param(str(NOW), GOOD[:-1] + "g", BODY, NOW, "malformed", id="non-hex"),
        pytest.param(str(NOW), GOOD, BODY, NOW + 301, "stale", id="too-old"),
        pytest.param(str(NOW), GOOD, BODY, NOW - 301, "stale", id="too-far-in-future"),
        pytest.param(str(NOW), GOOD, BODY + b" ", NOW, "bad_signature", id="body-changed"),
        pytest.param(str(NOW + 1), GOOD, BODY, NOW, "bad_signature", id="timestamp-changed"),
        pytest.param(
            str(NOW), sign(b"t" * 32, NOW, BODY), BODY, NOW, "bad_signature", id="other-secret"
        ),
    ],
)
def test_verify(
    timestamp: str | None, signature: str | None, body: bytes, now: float, reason: str | None
) -> None:
    if reason is None:
        verify(SECRET, timestamp, signature, body, now)
        return
    with pytest.raises(SignatureInvalid) as caught:
        verify(SECRET, timestamp, signature, body, now)
    assert caught.value.reason == reason
    assert caught.value.status_code == 401
    assert SECRET.decode() not in caught.value.message


def test_max_age_is_a_parameter() -> None:
    verify(SECRET, str(NOW), GOOD, BODY, NOW + 10, max_age=10)
    with pytest.raises(SignatureInvalid, match="stale"):
        verify(SECRET, str(NOW), GOOD, BODY, NOW + 11, max_age=10)


def test_stale_message_says_which_way() -> None:
    with pytest.raises(SignatureInvalid, match="seconds in the past"):
        verify(SECRET, str(NOW), GOOD, BODY, NOW + 400)
    with pytest.raises(SignatureInvalid, match="seconds in the future"):
        verify(SECRET, str(NOW), GOOD, BODY, NOW - 400)
