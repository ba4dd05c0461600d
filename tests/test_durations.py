"""Durations: seconds or strings like 30s, 2m, 1h."""

from __future__ import annotations

import pytest

from vigil.durations import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (1.5, 1.5),
        (10, 10.0),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5m", 90.0),
        ("250ms", 0.25),
        ("45", 45.0),
        (" 3s ", 3.0),
        ("1d", 86400.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", [-1, "-5s", "5x", "", "s", True, None, [], float("nan"), float("inf"), "99999999d"]
)
def test_invalid_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)
