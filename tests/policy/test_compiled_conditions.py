"""Compiled conditions answer exactly as a plain reading of the condition models does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vigil.policy.conditions import compile_condition
from vigil.policy.evaluator import PolicyIndex
from vigil.policy.models import AllOf, AnyOf, Condition, MetricBelow, MetricExceeds, PolicySpec


def holds(condition: Condition, values: Mapping[str, float]) -> bool:
    """The oracle: the condition models read directly (a missing metric is false)."""
    if isinstance(condition, MetricExceeds | MetricBelow):
        value = values.get(condition.metric)
        if value is None:
            return False
        if isinstance(condition, MetricExceeds):
            return value > condition.threshold
        return value < condition.threshold
    if isinstance(condition, AllOf):
        return all(holds(child, values) for child in condition.conditions)
    assert isinstance(condition, AnyOf)
    return any(holds(child, values) for child in condition.conditions)


METRICS = ("cpu", "mem", "disk")
NUMBERS = st.sampled_from([-1.0, 0.0, 4.99, 5.0, 50.0, 80.0, 80.5, 90.0, 1e9])


def leaves() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda kind, metric, threshold: {"type": kind, "metric": metric, "threshold": threshold},
        st.sampled_from(["metric_exceeds", "metric_below"]),
        st.sampled_from(METRICS),
        NUMBERS,
    )


CONDITIONS = st.recursive(
    leaves(),
    lambda children: st.builds(
        lambda kind, items: {"type": kind, "conditions": items},
        st.sampled_from(["all", "any"]),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=8,
)
VALUES = st.dictionaries(st.sampled_from(METRICS), NUMBERS)


def policy(name: str, condition: dict[str, Any]) -> PolicySpec:
    return PolicySpec.model_validate({"name": name, "condition": condition, "action": "custom"})


@given(CONDITIONS, VALUES)
def test_compiled_condition_answers_as_holds(
    condition: dict[str, Any], values: dict[str, float]
) -> None:
    spec = policy("p", condition)
    assert compile_condition(spec.condition)(values) is holds(spec.condition, values)


@given(st.lists(CONDITIONS, min_size=1, max_size=5), VALUES)
def test_index_reports_exactly_the_policies_that_hold(
    conditions: list[dict[str, Any]], values: dict[str, float]
) -> None:
    specs = [policy(f"p{i}", c) for i, c in enumerate(conditions)]
    index = PolicyIndex(specs)
    expected = [p.name for p in specs if holds(p.condition, values)]
    assert [v.policy.name for v in index.evaluate(specs, "web-01", 1.0, values)] == expected
    assert [v.policy.name for v in index.evaluate_values("web-01", values)] == expected
