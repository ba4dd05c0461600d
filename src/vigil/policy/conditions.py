"""Condition semantics: which metrics a condition reads, and whether it holds."""

from __future__ import annotations

from collections.abc import Mapping

from vigil.policy.models import AllOf, AnyOf, Condition, MetricBelow, MetricExceeds


def metrics_of(condition: Condition) -> frozenset[str]:
    """Every metric name a condition reads."""
    if isinstance(condition, MetricExceeds | MetricBelow):
        return frozenset((condition.metric,))
    names: set[str] = set()
    for child in condition.conditions:
        names |= metrics_of(child)
    return frozenset(names)


def holds(condition: Condition, values: Mapping[str, float]) -> bool:
    """Whether ``condition`` holds over a target's latest ``values`` (missing metric: false)."""
    if isinstance(condition, MetricExceeds):
        value = values.get(condition.metric)
        return value is not None and value > condition.threshold
    if isinstance(condition, MetricBelow):
        value = values.get(condition.metric)
        return value is not None and value < condition.threshold
    if isinstance(condition, AllOf):
        return all(holds(child, values) for child in condition.conditions)
    assert isinstance(condition, AnyOf)
    return any(holds(child, values) for child in condition.conditions)
