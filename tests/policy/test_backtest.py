"""The backtest replays samples through one policy with a simulated clock (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from vigil.policy.backtest import Sample, backtest
from vigil.policy.models import PolicySpec

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def policy(**fields: Any) -> PolicySpec:
    return PolicySpec.model_validate(
        {
            "name": "cpu-hot",
            "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
            "action": "scale-up",
            "auto_remediate": True,
            "cooldown_seconds": 60,
            **fields,
        }
    )


def samples(*items: tuple[float, str, float]) -> list[Sample]:
    return [(at(t), target, "cpu", value, {}) for t, target, value in items]


def never(policy: str, target: str, tags: Mapping[str, str], now: datetime) -> bool:
    return False


def run(spec: PolicySpec, data: list[Sample], end: float = 600, **kw: Any) -> dict[str, Any]:
    return backtest(
        spec, data, start=at(0), end=at(end), interval=10, silenced=kw.get("silenced", never)
    )


def test_episodes_cooldown_and_summary() -> None:
    data = samples(
        (0, "web-01", 95),  # episode 1 acts
        (5, "web-01", 96),  # same episode: nothing
        (10, "web-01", 50),  # resolved (the simulated action ends)
        (30, "web-01", 97),  # episode 2, 20 s after: cooldown
        (40, "web-01", 98),  # the cooldown holds for the episode: counted
        (100, "web-01", 50),
        (200, "web-01", 95),  # episode 3 acts
        (210, "db-01", 99),  # another target
    )
    result = run(policy(), data)
    assert result["samples"] == 8
    assert [
        (d["at"], d["target"], d["episode"], d["outcome"], d["reason"], d["count"])
        for d in result["decisions"]
    ] == [
        (at(0), "web-01", 1, "acted", None, 1),
        (at(5), "web-01", 1, "suppressed", "action already open", 1),
        (at(30), "web-01", 2, "suppressed", "cooldown", 2),
        (at(200), "web-01", 3, "acted", None, 1),
        (at(210), "db-01", 1, "acted", None, 1),
    ]
    summary = result["summary"]
    assert summary["acted"] == 3
    assert summary["suppressed"] == {"cooldown": 2, "action already open": 1}
    assert summary["targets"]["web-01"] == {
        "acted": 2,
        "suppressed": 3,
        "first": at(0),
        "last": at(200),
    }


def test_a_for_condition_fires_at_a_simulated_runner_pass() -> None:
    spec = policy(
        condition={
            "type": "threshold",
            "metric": "cpu",
            "operator": ">",
            "threshold": 90,
            "for": "30s",
        }
    )
    data = samples(*[(t, "web-01", 95) for t in range(0, 61, 5)])
    acted, held = run(spec, data, end=60)["decisions"]
    assert (acted["at"], acted["outcome"]) == (at(30), "acted")
    # Each later pass finds the episode's action still open (it ends when the episode does).
    assert (held["at"], held["reason"], held["count"]) == (at(40), "action already open", 3)


def test_breaker_blast_radius_and_silences_are_replayed() -> None:
    hot = samples(*[(i, f"web-0{i}", 95) for i in range(1, 5)])
    breaker = run(policy(max_actions_per_hour=2), hot)
    assert [d["reason"] for d in breaker["decisions"]] == [
        None,
        None,
        "circuit open",
        "circuit open",
    ]
    radius = run(policy(max_concurrent_targets=3), hot)
    assert radius["summary"]["suppressed"] == {"max concurrent targets": 1}

    def web_02(policy: str, target: str, tags: Mapping[str, str], now: datetime) -> bool:
        return target == "web-02"

    silenced = run(policy(), hot, silenced=web_02)
    assert silenced["summary"]["suppressed"] == {"silenced": 1}


def test_targets_outside_the_policy_are_not_replayed() -> None:
    result = run(policy(target="web-*"), samples((0, "db-01", 99), (1, "web-01", 99)))
    assert result["samples"] == 1
    assert [d["target"] for d in result["decisions"]] == ["web-01"]
