"""Table-driven tests of conditions judged over stored samples, and of the pair state machine,
with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vigil.decide.state import Change, PairPhase, Phase, step
from vigil.policy.conditions import compile_condition, history_parts, is_instant
from vigil.policy.history import TargetView, Verdict, aggregate, judge, lookbacks
from vigil.policy.models import PolicySpec

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T, P, F = Verdict.TRUE, Verdict.PENDING, Verdict.FALSE


def condition(document: dict[str, Any]) -> Any:
    return PolicySpec.model_validate(
        {"name": "p", "condition": document, "action": "custom"}
    ).condition


def series(*points: tuple[float, float]) -> list[tuple[datetime, float]]:
    """Samples as (seconds before NOW, value), oldest first."""
    return [(NOW - timedelta(seconds=ago), value) for ago, value in points]


def view(metric: str = "cpu", *points: tuple[float, float]) -> TargetView:
    samples = series(*points)
    latest = {metric: samples[-1][1]} if samples else {}
    seen = {metric: samples[-1][0]} if samples else {}
    return TargetView(values=latest, seen=seen, series={metric: samples})


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        (">", 90.5, True),
        (">", 90, False),
        (">=", 90, True),
        (">=", 89.9, False),
        ("<", 89.9, True),
        ("<", 90, False),
        ("<=", 90, True),
        ("<=", 90.1, False),
        ("==", 90, True),
        ("==", 90.1, False),
        ("!=", 90.1, True),
        ("!=", 90, False),
    ],
)
def test_threshold_operators(operator: str, value: float, expected: bool) -> None:
    c = condition({"type": "threshold", "metric": "cpu", "operator": operator, "threshold": 90})
    assert is_instant(c)
    assert compile_condition(c)({"cpu": value}, {}) is expected
    assert compile_condition(c)({}, {}) is False  # never sent
    assert judge(c, TargetView(values={"cpu": value}), NOW) is (T if expected else F)


FOR_30S = {"type": "threshold", "metric": "cpu", "operator": ">", "threshold": 90, "for": "30s"}


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([], F),  # no samples
        ([(40, 95), (20, 95), (0, 95)], T),  # held on every sample for 40 s
        ([(30, 95), (0, 95)], T),  # exactly 30 s
        ([(20, 95), (0, 95)], P),  # only 20 s so far
        ([(40, 50), (20, 95), (0, 95)], P),  # the run began after the dip at 40 s
        ([(40, 95), (20, 50), (0, 95)], P),  # a dip inside the span restarts it
        ([(40, 95), (20, 95), (0, 50)], F),  # not holding now
        ([(200, 95), (0, 95)], T),  # sparse samples: the run began 200 s ago
    ],
)
def test_for_needs_every_sample_to_hold_for_the_duration(
    points: list[tuple[float, float]], expected: Verdict
) -> None:
    c = condition(FOR_30S)
    assert not is_instant(c)
    assert judge(c, view("cpu", *points), NOW) is expected


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        ("avg", [1, 2, 3, 4], 2.5),
        ("min", [3, 1, 2], 1),
        ("max", [3, 1, 2], 3),
        ("sum", [1, 2, 3], 6),
        ("count", [5, 5, 5], 3),
        ("count", [], 0),
        ("last", [1, 9, 4], 4),
        ("p95", list(range(1, 101)), 95),
        ("p95", [7], 7),
        ("p95", [1, 2], 2),
        ("avg", [], None),
        ("p95", [], None),
    ],
)
def test_aggregates(kind: str, values: list[float], expected: float | None) -> None:
    assert aggregate(kind, values) == expected


def windowed(aggregate: str, operator: str = ">", threshold: float = 80) -> Any:
    return condition(
        {
            "type": "threshold",
            "metric": "cpu",
            "operator": operator,
            "threshold": threshold,
            "window": "60s",
            "aggregate": aggregate,
        }
    )


def test_window_aggregates_only_the_samples_inside_it() -> None:
    # 100 s ago is outside the 60 s window: only 70, 90 and 95 count (avg 85).
    samples = view("cpu", (100, 0), (50, 70), (30, 90), (0, 95))
    assert judge(windowed("avg"), samples, NOW) is T
    assert judge(windowed("min"), samples, NOW) is F
    assert judge(windowed("max", ">", 94), samples, NOW) is T
    assert judge(windowed("count", ">=", 3), samples, NOW) is T
    assert judge(windowed("count", ">=", 4), samples, NOW) is F
    assert judge(windowed("avg"), view("cpu"), NOW) is F  # an empty window
    assert judge(windowed("count", "<", 1), view("cpu"), NOW) is T  # nothing arrived


def test_rate_is_the_per_second_change_over_the_window() -> None:
    c = condition(
        {"type": "rate", "metric": "errors", "window": "60s", "operator": ">", "threshold": 1}
    )
    # 0 → 120 in the last 60 s: 2 per second.
    assert judge(c, view("errors", (60, 0), (30, 50), (0, 120)), NOW) is T
    assert judge(c, view("errors", (60, 0), (0, 30)), NOW) is F  # 0.5 per second
    assert judge(c, view("errors", (0, 500)), NOW) is F  # one sample: no rate
    assert judge(c, view("errors", (120, 0), (90, 500)), NOW) is F  # outside the window
    falling = condition(
        {"type": "rate", "metric": "disk", "window": "2m", "operator": "<", "threshold": -0.5}
    )
    assert judge(falling, view("disk", (120, 100), (0, 10)), NOW) is T


def test_absent_holds_once_the_metric_has_been_silent_long_enough() -> None:
    c = condition({"type": "absent", "metric": "heartbeat", "for": "1m"})
    assert judge(c, view("heartbeat", (30, 1)), NOW) is F
    assert judge(c, view("heartbeat", (60, 1)), NOW) is T
    assert judge(c, view("heartbeat", (3600, 1)), NOW) is T
    # Never seen (or its samples pruned away): absent.
    assert judge(c, TargetView(), NOW) is T


def test_all_takes_the_weakest_verdict_and_any_the_strongest() -> None:
    pending = dict(FOR_30S)
    both = condition(
        {
            "type": "all",
            "conditions": [
                pending,
                {"type": "metric_exceeds", "metric": "mem", "threshold": 50},
            ],
        }
    )
    either = condition({"type": "any", "conditions": both.conditions})
    cpu = series((10, 95), (0, 95))  # pending: 10 s of 30
    samples = TargetView(values={"cpu": 95, "mem": 60}, series={"cpu": cpu})
    assert judge(both, samples, NOW) is P
    assert judge(either, samples, NOW) is T
    low_mem = TargetView(values={"cpu": 95, "mem": 10}, series={"cpu": cpu})
    assert judge(both, low_mem, NOW) is F
    assert judge(either, low_mem, NOW) is P


def test_history_parts_and_lookbacks_name_what_needs_samples() -> None:
    c = condition(
        {
            "type": "all",
            "conditions": [
                FOR_30S,
                {"type": "absent", "metric": "hb", "for": "5m"},
                {"type": "rate", "metric": "err", "window": "2m", "operator": ">", "threshold": 0},
                {"type": "metric_exceeds", "metric": "mem", "threshold": 1},
            ],
        }
    )
    assert history_parts(c) == [
        "condition.conditions[0]: 'for' 30s of samples of cpu",
        "condition.conditions[1]: absence of hb for 300s",
        "condition.conditions[2]: rate of err over 120s",
    ]
    assert lookbacks(c) == {"cpu": 330.0, "err": 120.0}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"type": "threshold", "metric": "m", "operator": "=>", "threshold": 1},
            "operator",
        ),
        (
            {"type": "threshold", "metric": "m", "operator": ">", "threshold": 1, "window": "1m"},
            "'window' and 'aggregate' go together",
        ),
        (
            {
                "type": "threshold",
                "metric": "m",
                "operator": ">",
                "threshold": 1,
                "aggregate": "avg",
            },
            "'window' and 'aggregate' go together",
        ),
        (
            {
                "type": "threshold",
                "metric": "m",
                "operator": ">",
                "threshold": 1,
                "for": "1m",
                "window": "1m",
                "aggregate": "avg",
            },
            "cannot be combined",
        ),
        (
            {
                "type": "threshold",
                "metric": "m",
                "operator": ">",
                "threshold": 1,
                "window": "1m",
                "aggregate": "median",
            },
            "aggregate",
        ),
        ({"type": "absent", "metric": "m"}, "for"),
        ({"type": "absent", "metric": "m", "for": 0}, "greater than 0"),
        ({"type": "rate", "metric": "m", "operator": ">", "threshold": 1}, "window"),
        ({"type": "expr", "expression": "__import__('os')"}, "not allowed"),
        ({"type": "expr", "expression": 'tags.region == "eu"'}, "at least one metric"),
    ],
)
def test_invalid_conditions_are_refused_naming_the_problem(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        condition(document)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_state_machine_walks_ok_pending_firing_resolved() -> None:
    state = PairPhase()
    state, change = step(state, P, None, at(0))
    assert (state.phase, change, state.pending_since) == (Phase.PENDING, Change.PENDING, at(0))
    state, change = step(state, P, None, at(10))
    assert (state.phase, change) == (Phase.PENDING, None)  # still pending: nothing new
    state, change = step(state, T, None, at(30))
    assert (state.phase, change, state.episode, state.fired_at) == (
        Phase.FIRING,
        Change.FIRED,
        1,
        at(30),
    )
    assert state.pending_since == at(0)
    state, change = step(state, T, None, at(40))
    assert (state.phase, change, state.episode) == (Phase.FIRING, None, 1)
    state, change = step(state, P, None, at(45))
    assert (state.phase, change) == (Phase.FIRING, None)  # pending still counts as holding
    state, change = step(state, F, None, at(50))
    assert (state.phase, change, state.resolved_at) == (Phase.RESOLVED, Change.RESOLVED, at(50))
    state, change = step(state, T, None, at(60))
    assert (state.phase, change, state.episode) == (Phase.FIRING, Change.FIRED, 2)


def test_a_pending_condition_that_stops_holding_goes_back_to_ok() -> None:
    state, _ = step(PairPhase(), P, None, at(0))
    state, change = step(state, F, None, at(5))
    assert (state.phase, change, state.pending_since) == (Phase.OK, Change.CLEARED, None)
    assert state.episode == 0  # it never fired


def test_clear_holds_a_firing_pair_until_it_is_met() -> None:
    state, _ = step(PairPhase(), T, F, at(0))
    # The condition stopped holding, but the clear condition does not hold yet.
    state, change = step(state, F, F, at(10))
    assert (state.phase, change) == (Phase.FIRING, None)
    state, change = step(state, F, T, at(20))
    assert (state.phase, change) == (Phase.RESOLVED, Change.RESOLVED)
