"""Condition semantics: which metrics a condition reads, whether it needs stored history, and
whether it holds over a target's latest values (the instant conditions ingest evaluates)."""

from __future__ import annotations

import operator as op
from collections.abc import Callable, Mapping
from typing import Literal

from vigil.policy.models import (
    OUTSIDE_SOURCES,
    Absent,
    AlertCondition,
    AllOf,
    AnyOf,
    Condition,
    Expr,
    MetricBelow,
    MetricExceeds,
    PromQLCondition,
    Rate,
    ThresholdCondition,
)

Check = Callable[[Mapping[str, float], Mapping[str, str]], bool]
"""A compiled condition: whether it holds over a target's latest values and its tags."""

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": op.gt,
    ">=": op.ge,
    "<": op.lt,
    "<=": op.le,
    "==": op.eq,
    "!=": op.ne,
}
"""The comparison of each operator, ``value OP threshold``."""

_NO_TAGS: Mapping[str, str] = {}


def metrics_of(condition: Condition) -> frozenset[str]:
    """Every metric name a condition reads."""
    if isinstance(condition, AllOf | AnyOf):
        names: set[str] = set()
        for child in condition.conditions:
            names |= metrics_of(child)
        return frozenset(names)
    if isinstance(condition, Expr):
        return condition.compiled.metrics
    if isinstance(condition, OUTSIDE_SOURCES):
        return frozenset()
    return frozenset((condition.metric,))


Source = Literal["samples", "alerts", "promql"]


def source_of(condition: Condition) -> Source:
    """What a policy's condition is judged over: Vigil's samples, the alerts Alertmanager
    sends, or the answers of a PromQL query (see :data:`~vigil.policy.models.OUTSIDE_SOURCES`:
    such a condition is always a policy's whole condition)."""
    if isinstance(condition, AlertCondition):
        return "alerts"
    if isinstance(condition, PromQLCondition):
        return "promql"
    return "samples"


def first_value(condition: Condition, values: Mapping[str, float]) -> float | None:
    """The value a violation reports: that of the first metric (by name) the condition
    reads that ``values`` holds."""
    for metric in sorted(metrics_of(condition)):
        if metric in values:
            return values[metric]
    return None


def history_parts(condition: Condition, path: str = "condition") -> list[str]:
    """Where ``condition`` needs stored samples rather than the latest values (``for``,
    ``window``, ``rate``, ``absent``), each as ``"<path>: <why>"``; empty for an instant one."""
    if isinstance(condition, AllOf | AnyOf):
        parts: list[str] = []
        for i, child in enumerate(condition.conditions):
            parts.extend(history_parts(child, f"{path}.conditions[{i}]"))
        return parts
    if isinstance(condition, ThresholdCondition):
        if condition.for_ is not None:
            return [f"{path}: 'for' {condition.for_:g}s of samples of {condition.metric}"]
        if condition.window is not None:
            return [
                f"{path}: {condition.aggregate} over a {condition.window:g}s window"
                f" of {condition.metric}"
            ]
        return []
    if isinstance(condition, Rate):
        return [f"{path}: rate of {condition.metric} over {condition.window:g}s"]
    if isinstance(condition, Absent):
        return [f"{path}: absence of {condition.metric} for {condition.for_:g}s"]
    if isinstance(condition, PromQLCondition):
        return [f"{path}: the series of a PromQL query, asked of Prometheus"]
    if isinstance(condition, AlertCondition):
        return [f"{path}: alert {condition.alertname} firing in Alertmanager"]
    return []


def is_instant(condition: Condition) -> bool:
    """Whether ``condition`` is decided by the latest values alone (evaluated on ingest)."""
    if isinstance(condition, AllOf | AnyOf):
        return all(is_instant(child) for child in condition.conditions)
    if isinstance(condition, ThresholdCondition):
        return condition.for_ is None and condition.window is None
    return not isinstance(condition, Rate | Absent | AlertCondition | PromQLCondition)


def compile_condition(condition: Condition, *, sustained: bool = False) -> Check:
    """A function saying whether ``condition`` holds over a target's latest values and tags
    (a metric the target never sent makes its leaf false), built once per policy.

    Ingest evaluates policies for every sample; walking the condition models each time
    costs several times more than calling these closures. A condition that needs history
    can only be compiled ``sustained``: as if the given values had held for as long as it
    asks (a dry run's reading): ``for`` and ``window`` judge the value itself (``count``
    cannot be judged and is false), a ``rate`` is zero, and ``absent`` holds when the
    metric is missing.
    """
    if isinstance(condition, MetricExceeds):
        return _compare(condition.metric, ">", condition.threshold)
    if isinstance(condition, MetricBelow):
        return _compare(condition.metric, "<", condition.threshold)
    if isinstance(condition, ThresholdCondition):
        if not sustained and (condition.for_ is not None or condition.window is not None):
            raise ValueError("a 'for' or 'window' condition is judged over stored samples")
        if condition.aggregate == "count":
            return _never
        return _compare(condition.metric, condition.operator, condition.threshold)
    if isinstance(condition, Rate | Absent | AlertCondition | PromQLCondition):
        return _sustained(condition, sustained=sustained)
    if isinstance(condition, Expr):
        return condition.compiled.holds
    children = tuple(
        compile_condition(child, sustained=sustained) for child in condition.conditions
    )
    if isinstance(condition, AllOf):
        return _every(children)
    assert isinstance(condition, AnyOf)
    return _some(children)


def _sustained(
    condition: Rate | Absent | AlertCondition | PromQLCondition, *, sustained: bool
) -> Check:
    """A history condition read as if the values had held all along: a ``rate`` is zero, and
    ``absent`` holds when the metric is missing. What another system says (an alert, a
    PromQL answer) cannot be read off sample values: never."""
    if isinstance(condition, AlertCondition | PromQLCondition):
        if not sustained:
            raise ValueError(f"an '{condition.type}' condition is not judged over samples")
        return _never
    if isinstance(condition, Rate):
        if not sustained:
            raise ValueError("a 'rate' condition is judged over stored samples")
        compare, threshold, metric = (
            COMPARE[condition.operator],
            condition.threshold,
            condition.metric,
        )

        def steady(values: Mapping[str, float], tags: Mapping[str, str] = _NO_TAGS) -> bool:
            return metric in values and compare(0.0, threshold)

        return steady
    if not sustained:
        raise ValueError("an 'absent' condition is judged over stored samples")
    missing_metric = condition.metric

    def missing(values: Mapping[str, float], tags: Mapping[str, str] = _NO_TAGS) -> bool:
        return missing_metric not in values

    return missing


# Plain loops: all()/any() over a generator cost more than the checks themselves.
def _every(children: tuple[Check, ...]) -> Check:
    def every(values: Mapping[str, float], tags: Mapping[str, str] = _NO_TAGS) -> bool:
        for child in children:  # noqa: SIM110
            if not child(values, tags):
                return False
        return True

    return every


def _some(children: tuple[Check, ...]) -> Check:
    def some(values: Mapping[str, float], tags: Mapping[str, str] = _NO_TAGS) -> bool:
        for child in children:  # noqa: SIM110
            if child(values, tags):
                return True
        return False

    return some


def _never(values: Mapping[str, float], tags: Mapping[str, str] = _NO_TAGS) -> bool:
    return False


def _compare(metric: str, operator: str, threshold: float) -> Check:
    # The two common operators inline: a call through ``operator.gt`` costs more.
    if operator == ">":

        def greater(values: Mapping[str, float], tags: Mapping[str, str] = _NO_TAGS) -> bool:
            value = values.get(metric)
            return value is not None and value > threshold

        return greater
    if operator == "<":

        def less(values: Mapping[str, float], tags: Mapping[str, str] = _NO_TAGS) -> bool:
            value = values.get(metric)
            return value is not None and value < threshold

        return less
    compare = COMPARE[operator]

    def compared(values: Mapping[str, float], tags: Mapping[str, str] = _NO_TAGS) -> bool:
        value = values.get(metric)
        return value is not None and compare(value, threshold)

    return compared
