"""Which ``alert`` policies an alert is about, and for which target: pure functions.

A matcher is written as Alertmanager writes them: a plain value is equality, ``=~`` a
regular expression the whole value must match, ``!~`` one it must not, ``!=`` a value it
must differ from. A label the alert does not carry counts as the empty string, as in
Alertmanager.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from vigil.ingest.labels import TARGET_LABELS, target_of, usable_tags, usable_target
from vigil.policy.matcher import target_matches
from vigil.policy.models import AlertCondition, PolicySpec

ALERTNAME = "alertname"


@lru_cache(maxsize=4096)
def _pattern(expression: str) -> re.Pattern[str]:
    return re.compile(expression)


def matcher_holds(matcher: str, value: str) -> bool:
    """Whether a label's ``value`` satisfies ``matcher`` (see the module's docstring)."""
    if matcher.startswith("=~"):
        return _pattern(matcher[2:]).fullmatch(value) is not None
    if matcher.startswith("!~"):
        return _pattern(matcher[2:]).fullmatch(value) is None
    if matcher.startswith("!="):
        return value != matcher[2:]
    return value == matcher


def alert_matches(condition: AlertCondition, labels: Mapping[str, str]) -> bool:
    """Whether an alert with ``labels`` is one ``condition`` speaks of."""
    if labels.get(ALERTNAME, "") != condition.alertname:
        return False
    return all(matcher_holds(m, labels.get(name, "")) for name, m in condition.matchers.items())


def alert_target(policy: PolicySpec, labels: Mapping[str, str]) -> str | None:
    """The target an alert is about for ``policy``: its ``target_label``'s value, else the
    first usable one of the usual labels (:func:`vigil.ingest.labels.target_of`); None
    when there is none."""
    return usable(target_of(labels, policy.target_label))


def usable(target: str | None) -> str | None:
    """``target`` (trimmed), unless it cannot be one: empty, too long, or with a control
    character."""
    return usable_target(target)


def alert_tags(labels: Mapping[str, str], target_label: str | None) -> dict[str, str]:
    """The labels as a violation's tags: all of them except the one the target came from."""
    source = target_label if target_label is not None else _source_label(labels)
    return usable_tags({k: v for k, v in labels.items() if k != source})


def _source_label(labels: Mapping[str, str]) -> str | None:
    for name in TARGET_LABELS:
        if labels.get(name):
            return name
    return None


@dataclass(frozen=True, slots=True)
class Match:
    """An alert that is about ``target`` for ``policy``."""

    policy: PolicySpec
    target: str
    tags: dict[str, str]


def matches(policies: Iterable[PolicySpec], labels: Mapping[str, str]) -> list[Match]:
    """The enabled ``alert`` policies an alert with ``labels`` holds for, each with its
    target (a policy finding no target, or whose ``target`` does not select it, is left
    out), in policy order."""
    found: list[Match] = []
    for policy in policies:
        condition = policy.condition
        if not policy.enabled or not isinstance(condition, AlertCondition):
            continue
        if not alert_matches(condition, labels):
            continue
        target = alert_target(policy, labels)
        if target is None or not target_matches(policy.target, target):
            continue
        found.append(Match(policy, target, alert_tags(labels, policy.target_label)))
    return found
