"""Table-driven tests of target matching."""

from __future__ import annotations

import pytest

from vigil.policy.matcher import target_matches


@pytest.mark.parametrize(
    ("pattern", "target", "expected"),
    [
        ("all", "web-01", True),
        ("*", "anything", True),
        ("web-01", "web-01", True),
        ("web-01", "web-011", False),
        ("web-01", "WEB-01", False),
        ("web-*", "web-01", True),
        ("web-*", "web", False),
        ("web*", "web", True),
        ("web*", "webserver", True),
        ("api-*", "web-01", False),
        ("web-0?", "web-07", True),
        ("web-0?", "web-10", False),
        ("web-[12]", "web-2", True),
        ("web-[12]", "web-3", False),
        ("*-prod", "db-prod", True),
        ("all", "", True),
    ],
)
def test_target_matches(pattern: str, target: str, expected: bool) -> None:
    assert target_matches(pattern, target) is expected
