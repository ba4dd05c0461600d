"""Compiled conditions answer exactly as a plain reading of the condition models does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.policy.conditions import compile_condition, metrics_of
from vigil.policy.evaluator import PolicyIndex, guard
from vigil.policy.models import (
    AllOf,
    AnyOf,
    Condition,
    MetricBelow,
    MetricExceeds,
    PolicySpec,
    ThresholdCondition,
)

ORACLE = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    "==": lambda v, t: v == t,
    "!=": lambda v, t: v != t,
}


def holds(condition: Condition, values: Mapping[str, float]) -> bool:
    """The oracle: the condition models read directly (a missing metric is false)."""
    if isinstance(condition, MetricExceeds | MetricBelow | ThresholdCondition):
        value = values.get(condition.metric)
        if value is None:
            return False
        if isinstance(condition, MetricExceeds):
            return value > condition.threshold
        if isinstance(condition, ThresholdCondition):
            return bool(ORACLE[condition.operator](value, condition.threshold))
        return value < condition.threshold
    if isinstance(condition, AllOf):
        return all(holds(child, values) for child in condition.conditions)
    assert isinstance(condition, AnyOf)
    return any(holds(child, values) for child in condition.conditions)


METRICS = ("cpu", "mem", "disk")
NUMBERS = st.sampled_from([-1.0, 0.0, 4.99, 5.0, 50.0, 80.0, 80.5, 90.0, 1e9])


def leaves(metrics: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    shorthand = st.builds(
        lambda kind, metric, threshold: {"type": kind, "metric": metric, "threshold": threshold},
        st.sampled_from(["metric_exceeds", "metric_below"]),
        st.sampled_from(metrics),
        NUMBERS,
    )
    threshold = st.builds(
        lambda op, metric, threshold: {
            "type": "threshold",
            "metric": metric,
            "operator": op,
            "threshold": threshold,
        },
        st.sampled_from(sorted(ORACLE)),
        st.sampled_from(metrics),
        NUMBERS,
    )
    return shorthand | threshold


def conditions(metrics: tuple[str, ...] = METRICS) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        leaves(metrics),
        lambda children: st.builds(
            lambda kind, items: {"type": kind, "conditions": items},
            st.sampled_from(["all", "any"]),
            st.lists(children, min_size=1, max_size=3),
        ),
        max_leaves=8,
    )


CONDITIONS = conditions()
VALUES = st.dictionaries(st.sampled_from(METRICS), NUMBERS)


def policy(name: str, condition: dict[str, Any]) -> PolicySpec:
    return PolicySpec.model_validate({"name": name, "condition": condition, "action": "custom"})


@given(CONDITIONS, VALUES)
def test_compiled_condition_answers_as_holds(
    condition: dict[str, Any], values: dict[str, float]
) -> None:
    spec = policy("p", condition)
    assert compile_condition(spec.condition)(values, {}) is holds(spec.condition, values)


@given(st.lists(CONDITIONS, min_size=1, max_size=5), VALUES)
def test_index_reports_exactly_the_policies_that_hold(
    conditions: list[dict[str, Any]], values: dict[str, float]
) -> None:
    specs = [policy(f"p{i}", c) for i, c in enumerate(conditions)]
    index = PolicyIndex(specs)
    expected = [p.name for p in specs if holds(p.condition, values)]
    for metric, value in values.items():
        # What ingest reports for a sample of each metric the target has.
        found = index.plan(metric, "web-01").evaluate("web-01", value, values, {})
        reading = [p.name for p in specs if metric in metrics_of(p.condition)]
        assert [v.policy.name for v in found] == [n for n in expected if n in reading]
    assert [v.policy.name for v in index.evaluate_values("web-01", values)] == expected


@settings(max_examples=1000)
@given(conditions(("cpu", "mem")), VALUES, NUMBERS)
def test_guard_never_rules_out_a_value_that_makes_the_condition_hold(
    condition: dict[str, Any], values: dict[str, float], value: float
) -> None:
    spec = policy("p", condition)
    above, below = guard(spec.condition, "cpu")
    values = {**values, "cpu": value}
    if holds(spec.condition, values):
        assert value > above or value < below


@given(st.lists(CONDITIONS, min_size=1, max_size=5), st.sampled_from(METRICS), VALUES, NUMBERS)
def test_plan_reports_exactly_the_policies_that_hold(
    conditions: list[dict[str, Any]], metric: str, values: dict[str, float], value: float
) -> None:
    specs = [policy(f"p{i}", c) for i, c in enumerate(conditions)]
    plan = PolicyIndex(specs).plan(metric, "web-01")
    values = {**values, metric: value}
    reading = [p for p in specs if metric in metrics_of(p.condition)]
    expected = [p.name for p in reading if holds(p.condition, values)]
    assert [v.policy.name for v in plan.evaluate("web-01", value, values, {})] == expected
    assert [p.name for p in plan.candidates] == [p.name for p in reading]


def test_guard_of_a_band_condition_lets_every_value_through() -> None:
    # "above 10 and below 90" holds inside a band: no "v > a or v < b" form describes it.
    band = policy(
        "band",
        {
            "type": "all",
            "conditions": [
                {"type": "metric_exceeds", "metric": "cpu", "threshold": 10},
                {"type": "metric_below", "metric": "cpu", "threshold": 90},
            ],
        },
    )
    above, below = guard(band.condition, "cpu")
    value = 50.0
    assert value > above or value < below
    plan = PolicyIndex([band]).plan("cpu", "web-01")
    assert [v.policy.name for v in plan.evaluate("web-01", 50.0, {"cpu": 50.0}, {})] == ["band"]
