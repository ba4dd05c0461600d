"""Compiled conditions answer exactly as ``holds`` does; the index evaluates with them."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vigil.policy.conditions import compile_condition, holds
from vigil.policy.evaluator import PolicyIndex, evaluate_sample
from vigil.policy.models import PolicySpec

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
def test_index_evaluates_as_evaluate_sample(
    conditions: list[dict[str, Any]], values: dict[str, float]
) -> None:
    specs = [policy(f"p{i}", c) for i, c in enumerate(conditions)]
    index = PolicyIndex(specs)
    assert index.evaluate(specs, "web-01", 1.0, values) == evaluate_sample(
        specs, "web-01", 1.0, values
    )
