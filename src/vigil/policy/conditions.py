"""Condition semantics: which metrics a condition reads, and whether it holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from vigil.policy.models import AllOf, AnyOf, Condition, MetricBelow, MetricExceeds

Check = Callable[[Mapping[str, float]], bool]
"""A compiled condition: whether it holds over a target's latest values."""


def metrics_of(condition: Condition) -> frozenset[str]:
    """Every metric name a condition reads."""
    if isinstance(condition, MetricExceeds | MetricBelow):
        return frozenset((condition.metric,))
    names: set[str] = set()
    for child in condition.conditions:
        names |= metrics_of(child)
    return frozenset(names)


def compile_condition(condition: Condition) -> Check:
    """A function saying whether ``condition`` holds over a target's latest values (a metric
    the target never sent makes its leaf false), built once per policy.

    Ingest evaluates policies for every sample; walking the condition models each time
    costs several times more than calling these closures.
    """
    if isinstance(condition, MetricExceeds):
        metric, threshold = condition.metric, condition.threshold

        def exceeds(values: Mapping[str, float]) -> bool:
            value = values.get(metric)
            return value is not None and value > threshold

        return exceeds
    if isinstance(condition, MetricBelow):
        metric, threshold = condition.metric, condition.threshold

        def below(values: Mapping[str, float]) -> bool:
            value = values.get(metric)
            return value is not None and value < threshold

        return below
    children = tuple(compile_condition(child) for child in condition.conditions)
    # Plain loops: all()/any() over a generator cost more than the checks themselves.
    if isinstance(condition, AllOf):

        def every(values: Mapping[str, float]) -> bool:
            for child in children:  # noqa: SIM110
                if not child(values):
                    return False
            return True

        return every
    assert isinstance(condition, AnyOf)

    def some(values: Mapping[str, float]) -> bool:
        for child in children:  # noqa: SIM110
            if child(values):
                return True
        return False

    return some
