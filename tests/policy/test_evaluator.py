"""Table-driven tests of the pure evaluator: conditions, the index, violations."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.policy.conditions import compile_condition, metrics_of
from vigil.policy.evaluator import PolicyIndex
from vigil.policy.models import PolicySpec


def policy(name: str, condition: dict[str, Any], **fields: Any) -> PolicySpec:
    return PolicySpec.model_validate(
        {"name": name, "condition": condition, "action": "scale-up", **fields}
    )


def exceeds(metric: str, threshold: float) -> dict[str, Any]:
    return {"type": "metric_exceeds", "metric": metric, "threshold": threshold}


def below(metric: str, threshold: float) -> dict[str, Any]:
    return {"type": "metric_below", "metric": metric, "threshold": threshold}


CPU_AND_MEM = {"type": "all", "conditions": [exceeds("cpu", 80), exceeds("mem", 80)]}
CPU_OR_DISK = {"type": "any", "conditions": [exceeds("cpu", 90), below("disk", 5)]}


@pytest.mark.parametrize(
    ("condition", "values", "expected"),
    [
        (exceeds("cpu", 90), {"cpu": 90.5}, True),
        (exceeds("cpu", 90), {"cpu": 90}, False),  # strictly greater
        (exceeds("cpu", 90), {"cpu": -1}, False),
        (exceeds("cpu", 90), {}, False),  # never sent: false
        (exceeds("cpu", 90), {"mem": 99}, False),
        (below("disk", 5), {"disk": 4.99}, True),
        (below("disk", 5), {"disk": 5}, False),  # strictly less
        (below("disk", 5), {}, False),
        (CPU_AND_MEM, {"cpu": 81, "mem": 81}, True),
        (CPU_AND_MEM, {"cpu": 81, "mem": 80}, False),
        (CPU_AND_MEM, {"cpu": 81}, False),  # a missing metric makes it false
        (CPU_OR_DISK, {"cpu": 91}, True),
        (CPU_OR_DISK, {"disk": 1}, True),
        (CPU_OR_DISK, {"cpu": 50, "disk": 50}, False),
        (CPU_OR_DISK, {}, False),
        (
            {
                "type": "any",
                "conditions": [CPU_AND_MEM, {"type": "all", "conditions": [below("x", 0)]}],
            },
            {"x": -1},
            True,
        ),
    ],
)
def test_holds(condition: dict[str, Any], values: dict[str, float], expected: bool) -> None:
    assert compile_condition(policy("p", condition).condition)(values, {}) is expected


def test_metrics_of_collects_every_leaf() -> None:
    spec = policy("p", {"type": "any", "conditions": [CPU_AND_MEM, below("disk", 5)]})
    assert metrics_of(spec.condition) == {"cpu", "mem", "disk"}


def test_index_selects_enabled_policies_reading_the_metric_for_the_target() -> None:
    index = PolicyIndex(
        [
            policy("web-cpu", exceeds("cpu", 90), target="web-*"),
            policy("all-cpu", exceeds("cpu", 95)),
            policy("mem", exceeds("mem", 85)),
            policy("off", exceeds("cpu", 1), enabled=False),
            policy("combo", CPU_AND_MEM, target="db-01"),
        ]
    )
    assert len(index) == 4
    assert {p.name for p in index.candidates("cpu", "web-01")} == {"web-cpu", "all-cpu"}
    assert {p.name for p in index.candidates("cpu", "db-01")} == {"all-cpu", "combo"}
    assert index.candidates("disk", "web-01") == []
    assert not index.needs_other_metrics("cpu", "web-01")
    assert index.needs_other_metrics("cpu", "db-01")


def test_index_reports_each_violated_candidate() -> None:
    index = PolicyIndex([policy("hot", exceeds("cpu", 90)), policy("warm", exceeds("cpu", 50))])
    violations = index.plan("cpu", "web-01").evaluate("web-01", 70.0, {"cpu": 70.0}, {})
    assert [(v.policy.name, v.target, v.value) for v in violations] == [("warm", "web-01", 70.0)]


def test_evaluate_values_skips_disabled_policies_and_other_targets() -> None:
    policies = [
        policy("web", exceeds("cpu", 90), target="web-*"),
        policy("api", exceeds("cpu", 90), target="api-*"),
        policy("off", exceeds("cpu", 90), enabled=False),
    ]
    found = PolicyIndex(policies).evaluate_values("web-02", {"cpu": 99})
    assert [v.policy.name for v in found] == ["web"]


def test_the_index_names_every_metric_an_enabled_policy_reads() -> None:
    sustained = {
        "type": "threshold",
        "metric": "load",
        "operator": ">",
        "threshold": 4,
        "for": "1m",
    }
    index = PolicyIndex(
        [
            policy("instant", CPU_AND_MEM, clear=below("swap", 10)),
            policy("sustained", sustained),
            policy("alerting", {"type": "alert", "alertname": "HighCPU"}),
            policy("off", exceeds("disk", 90), enabled=False),
        ]
    )
    assert index.metric_names == frozenset({"cpu", "mem", "swap", "load"})
