"""Policies judged over what another system says: ``alert`` and ``promql`` conditions."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from vigil.policy.conditions import compile_condition, is_instant, metrics_of, source_of
from vigil.policy.evaluator import PolicyIndex
from vigil.policy.models import PolicySpec

ALERT = {"type": "alert", "alertname": "HighCPU", "matchers": {"severity": "critical"}}
PROMQL = {"type": "promql", "query": "up == 0", "for": "2m"}
METRIC = {"type": "metric_exceeds", "metric": "cpu", "threshold": 90}


def policy(name: str = "p", **fields: Any) -> PolicySpec:
    return PolicySpec.model_validate({"name": name, "action": "noop", **fields})


def test_alert_and_promql_policies_are_listed_apart_from_sample_policies() -> None:
    index = PolicyIndex(
        [
            policy("alerting", condition=ALERT),
            policy("querying", condition=PROMQL),
            policy("instant", condition=METRIC),
            policy(
                "sustained", condition={**METRIC, "type": "threshold", "operator": ">", "for": "1m"}
            ),
        ]
    )
    assert [p.name for p in index.alerts] == ["alerting"]
    assert [p.name for p in index.promql] == ["querying"]
    assert [p.name for p in index.instant] == ["instant"]
    assert [p.name for p in index.historic] == ["sustained"]
    assert index.candidates("cpu", "web-01")[0].name == "instant"


def test_they_read_no_metric_and_are_never_judged_over_samples() -> None:
    for raw, source in ((ALERT, "alerts"), (PROMQL, "promql")):
        condition = policy(condition=raw).condition
        assert source_of(condition) == source
        assert metrics_of(condition) == frozenset()
        assert not is_instant(condition)
        assert compile_condition(condition, sustained=True)({"cpu": 99.0}, {}) is False
        with pytest.raises(ValueError, match="not judged over samples"):
            compile_condition(condition)
    assert policy(condition=PROMQL).condition.for_ == 120.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"condition": {"type": "all", "conditions": [ALERT, METRIC]}}, "cannot be combined"),
        ({"condition": {"type": "any", "conditions": [METRIC, PROMQL]}}, "cannot be combined"),
        ({"condition": ALERT, "clear": METRIC}, "resolves when its alert does"),
        ({"condition": PROMQL, "clear": METRIC}, "cleared by another 'promql'"),
        ({"condition": METRIC, "clear": PROMQL}, "cleared by another 'promql'"),
        ({"condition": METRIC, "target_label": "host"}, "target_label"),
        ({"condition": {**ALERT, "matchers": {"team": "=~web|("}}}, "matchers.team"),
        ({"condition": {**ALERT, "alertname": ""}}, "alertname"),
        ({"condition": {**ALERT, "matcher": {}}}, "matcher"),
        ({"condition": {**PROMQL, "query": ""}}, "query"),
    ],
)
def test_misuse_is_refused_naming_the_problem(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        policy(**fields)


def test_a_promql_policy_may_clear_with_another_query_and_name_its_target_label() -> None:
    spec = policy(
        condition=PROMQL, clear={"type": "promql", "query": "up == 1"}, target_label="node"
    )
    assert spec.target_label == "node"
    assert spec.document()["condition"] == {"type": "promql", "query": "up == 0", "for": 120.0}
