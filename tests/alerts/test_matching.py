"""Which alert policies an alert holds for, and its target and tags: pure tables."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.alerts.matching import alert_matches, matcher_holds, matches
from vigil.policy.models import AlertCondition, PolicySpec


@pytest.mark.parametrize(
    ("matcher", "value", "holds"),
    [
        ("critical", "critical", True),
        ("critical", "warning", False),
        ("critical", "", False),
        ("", "", True),
        ("=~web|api", "web", True),
        ("=~web|api", "api", True),
        ("=~web|api", "webserver", False),  # the whole value must match
        ("=~web.*", "webserver", True),
        ("=~", "", True),
        ("!~web|api", "db", True),
        ("!~web|api", "web", False),
        ("!~web", "webserver", True),  # not a full match
        ("!=critical", "warning", True),
        ("!=critical", "critical", False),
        ("!=critical", "", True),
        ("!=", "", False),
    ],
)
def test_matcher_semantics(matcher: str, value: str, holds: bool) -> None:
    assert matcher_holds(matcher, value) is holds


@pytest.mark.parametrize(
    ("matchers", "labels", "holds"),
    [
        ({}, {"alertname": "HighCPU"}, True),
        ({}, {"alertname": "Other"}, False),
        ({"severity": "critical"}, {"alertname": "HighCPU"}, False),  # missing is ""
        ({"severity": "!=critical"}, {"alertname": "HighCPU"}, True),
        ({"team": "=~"}, {"alertname": "HighCPU"}, True),
        ({"team": "!~.+"}, {"alertname": "HighCPU"}, True),
        ({"team": "!~.+"}, {"alertname": "HighCPU", "team": "web"}, False),
        (
            {"severity": "critical", "team": "=~web|api"},
            {"alertname": "HighCPU", "severity": "critical", "team": "api"},
            True,
        ),
        (
            {"severity": "critical", "team": "=~web|api"},
            {"alertname": "HighCPU", "severity": "critical", "team": "db"},
            False,
        ),
    ],
)
def test_alert_matches(matchers: dict[str, str], labels: dict[str, str], holds: bool) -> None:
    condition = AlertCondition(type="alert", alertname="HighCPU", matchers=matchers)
    assert alert_matches(condition, labels) is holds


def policy(**fields: Any) -> PolicySpec:
    return PolicySpec.model_validate(
        {
            "name": "p",
            "condition": {"type": "alert", "alertname": "HighCPU"},
            "action": "noop",
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("fields", "labels", "target", "tags"),
    [
        (
            {},
            {"alertname": "HighCPU", "instance": "web-1:9100", "job": "node"},
            "web-1",
            {"alertname": "HighCPU", "job": "node"},
        ),
        (
            {"target_label": "job"},
            {"alertname": "HighCPU", "instance": "web-1:9100", "job": "node"},
            "node",
            {"alertname": "HighCPU", "instance": "web-1:9100"},
        ),
        ({"target": "db-*"}, {"alertname": "HighCPU", "host": "web-1"}, None, None),
        (
            {"target": "web-*"},
            {"alertname": "HighCPU", "host": "web-1"},
            "web-1",
            {"alertname": "HighCPU"},
        ),
        ({}, {"alertname": "HighCPU", "severity": "critical"}, None, None),
        ({}, {"alertname": "HighCPU", "host": "x" * 256}, None, None),
        ({"target_label": "pod"}, {"alertname": "HighCPU", "host": "web-1"}, None, None),
    ],
)
def test_targets_and_tags(
    fields: dict[str, Any],
    labels: dict[str, str],
    target: str | None,
    tags: dict[str, str] | None,
) -> None:
    found = matches([policy(**fields)], labels)
    if target is None:
        assert found == []
    else:
        [match] = found
        assert (match.target, match.tags) == (target, tags)


def test_a_disabled_policy_matches_nothing() -> None:
    assert matches([policy(enabled=False)], {"alertname": "HighCPU", "host": "h"}) == []
