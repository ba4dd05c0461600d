"""Which silence covers a violation: table-driven, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vigil.decide.silence_rules import SilenceRule, silencing

NOW = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def rule(**matchers: object) -> SilenceRule:
    return SilenceRule(id=1, starts_at=NOW - HOUR, ends_at=NOW + HOUR, **matchers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("silence", "policy", "target", "tags", "covered"),
    [
        (rule(policy="high-cpu-*"), "high-cpu-alert", "web-01", {}, True),
        (rule(policy="high-cpu-*"), "low-disk", "web-01", {}, False),
        (rule(target="web-0[1-2]"), "any", "web-02", {}, True),
        (rule(target="web-0[1-2]"), "any", "web-03", {}, False),
        (rule(target="WEB-*"), "any", "web-01", {}, False),  # globs are case-sensitive
        (rule(tags={"region": "eu"}), "any", "web-01", {"region": "eu", "x": "y"}, True),
        (rule(tags={"region": "eu"}), "any", "web-01", {"region": "us"}, False),
        (rule(tags={"region": "eu"}), "any", "web-01", {}, False),
        (rule(policy="p", target="t", tags={"a": "1"}), "p", "t", {"a": "1"}, True),
        (rule(policy="p", target="t", tags={"a": "1"}), "p", "u", {"a": "1"}, False),
    ],
)
def test_every_given_matcher_must_match(
    silence: SilenceRule, policy: str, target: str, tags: dict[str, str], covered: bool
) -> None:
    found = silencing([silence], policy=policy, target=target, tags=tags, now=NOW)
    assert (found is not None) is covered


@pytest.mark.parametrize(
    ("starts", "ends", "active"),
    [
        (-HOUR, HOUR, True),
        (timedelta(0), HOUR, True),
        (-HOUR, timedelta(0), False),
        (HOUR, 2 * HOUR, False),
    ],
)
def test_only_a_silence_in_force_covers(starts: timedelta, ends: timedelta, active: bool) -> None:
    silence = SilenceRule(id=1, starts_at=NOW + starts, ends_at=NOW + ends, target="*")
    assert (silencing([silence], policy="p", target="t", tags={}, now=NOW) is not None) is active
