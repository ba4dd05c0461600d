"""Judging conditions over stored samples: ``for``, ``window``, ``rate`` and ``absent``.

Pure: a target's samples, latest values and tags and ``now`` in, a verdict out (docs/design.md
invariant 4). The runner reads the samples and hands them in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from vigil.policy.conditions import COMPARE, compile_condition
from vigil.policy.models import (
    Absent,
    AllOf,
    AnyOf,
    Condition,
    Rate,
    ThresholdCondition,
)

STALENESS = 300.0
"""How far before a ``for`` span the runner looks for the sample that opened it (seconds):
the value a target last sent counts as current for five minutes, as in Prometheus."""

Point = tuple[datetime, float]
"""A stored sample: its timestamp and value."""


class Verdict(IntEnum):
    """What a condition says about a target now. Ordered: ``all`` takes the least of its
    parts, ``any`` the greatest."""

    FALSE = 0
    PENDING = 1
    """True now, but not yet for as long as a ``for`` asks."""
    TRUE = 2


@dataclass(frozen=True, slots=True)
class TargetView:
    """What the runner knows of one target."""

    values: Mapping[str, float] = field(default_factory=dict)
    """The latest value of each metric."""
    seen: Mapping[str, datetime] = field(default_factory=dict)
    """When each metric was last sent."""
    series: Mapping[str, Sequence[Point]] = field(default_factory=dict)
    """Samples of the metrics that need history, oldest first, back as far as
    :func:`lookbacks` asks."""
    tags: Mapping[str, str] = field(default_factory=dict)


def lookbacks(condition: Condition) -> dict[str, float]:
    """How many seconds of samples each metric's history conditions need (none for metrics
    read only through their latest value)."""
    if isinstance(condition, AllOf | AnyOf):
        needs: dict[str, float] = {}
        for child in condition.conditions:
            for metric, seconds in lookbacks(child).items():
                needs[metric] = max(needs.get(metric, 0.0), seconds)
        return needs
    if isinstance(condition, ThresholdCondition):
        if condition.for_ is not None:
            return {condition.metric: condition.for_ + STALENESS}
        if condition.window is not None:
            return {condition.metric: condition.window}
        return {}
    if isinstance(condition, Rate):
        return {condition.metric: condition.window}
    return {}


def judge(condition: Condition, view: TargetView, now: datetime) -> Verdict:
    """The verdict of ``condition`` for one target at ``now``."""
    if isinstance(condition, AllOf):
        return min(judge(child, view, now) for child in condition.conditions)
    if isinstance(condition, AnyOf):
        return max(judge(child, view, now) for child in condition.conditions)
    if isinstance(condition, ThresholdCondition):
        if condition.for_ is not None:
            return _sustained(condition, view, now)
        if condition.window is not None:
            return _windowed(condition, view, now)
    if isinstance(condition, Rate):
        return _rate(condition, view, now)
    if isinstance(condition, Absent):
        last = view.seen.get(condition.metric)
        if last is None:
            points = view.series.get(condition.metric)
            last = points[-1][0] if points else None
        # Never seen at all (or pruned away): absent.
        if last is None or (now - last).total_seconds() >= condition.for_:
            return Verdict.TRUE
        return Verdict.FALSE
    check = compile_condition(condition)
    return Verdict.TRUE if check(view.values, view.tags) else Verdict.FALSE


def _sustained(condition: ThresholdCondition, view: TargetView, now: datetime) -> Verdict:
    """True when every sample has held since at least ``for`` ago; pending while the run of
    holding samples is younger."""
    assert condition.for_ is not None
    points = view.series.get(condition.metric, ())
    compare, threshold = COMPARE[condition.operator], condition.threshold
    if not points or not compare(points[-1][1], threshold):
        return Verdict.FALSE
    since = now - timedelta(seconds=condition.for_)
    for ts, value in reversed(points):
        if not compare(value, threshold):
            return Verdict.PENDING  # the run began after this sample, so after ``since``
        if ts <= since:
            return Verdict.TRUE
    return Verdict.PENDING


def _window(points: Sequence[Point], now: datetime, seconds: float) -> list[float]:
    start = now - timedelta(seconds=seconds)
    return [value for ts, value in points if start <= ts <= now]


def _windowed(condition: ThresholdCondition, view: TargetView, now: datetime) -> Verdict:
    assert condition.window is not None
    assert condition.aggregate is not None
    values = _window(view.series.get(condition.metric, ()), now, condition.window)
    result = aggregate(condition.aggregate, values)
    if result is None:
        return Verdict.FALSE
    return (
        Verdict.TRUE if COMPARE[condition.operator](result, condition.threshold) else Verdict.FALSE
    )


def aggregate(kind: str, values: Sequence[float]) -> float | None:
    """An aggregate of a window's values (None when there are none, but ``count``: 0)."""
    if kind == "count":
        return float(len(values))
    if not values:
        return None
    if kind == "avg":
        return math.fsum(values) / len(values)
    if kind == "min":
        return min(values)
    if kind == "max":
        return max(values)
    if kind == "sum":
        return math.fsum(values)
    if kind == "last":
        return values[-1]
    assert kind == "p95"
    ordered = sorted(values)
    # Nearest rank: the smallest value with at least 95% of the values at or below it.
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _rate(condition: Rate, view: TargetView, now: datetime) -> Verdict:
    start = now - timedelta(seconds=condition.window)
    points = [(ts, v) for ts, v in view.series.get(condition.metric, ()) if start <= ts <= now]
    if len(points) < 2:
        return Verdict.FALSE
    (first_ts, first), (last_ts, last) = points[0], points[-1]
    span = (last_ts - first_ts).total_seconds()
    if span <= 0:
        return Verdict.FALSE
    per_second = (last - first) / span
    return (
        Verdict.TRUE
        if COMPARE[condition.operator](per_second, condition.threshold)
        else Verdict.FALSE
    )
