"""The pure evaluator: policies and a target's values in, violations out.

No database, Redis, HTTP or clock: everything it needs is handed in (docs/design.md invariant 4).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from vigil.policy.conditions import Check, compile_condition, is_instant, metrics_of, source_of
from vigil.policy.matcher import target_matches
from vigil.policy.models import (
    AllOf,
    AnyOf,
    Condition,
    MetricBelow,
    MetricExceeds,
    PolicySpec,
    ThresholdCondition,
)

_MAX_PLANS = 65_536
"""How many (metric, target) plans an index remembers before starting afresh."""

Guard = tuple[float, float]
"""``(above, below)``: a value ``v`` of one metric can make a condition hold only if
``v > above or v < below``."""

_ANY: Guard = (-math.inf, math.inf)
"""Every value may (the condition does not depend on the metric alone)."""


def guard(condition: Condition, metric: str) -> Guard:
    """The values of ``metric`` for which ``condition`` can hold at all, whatever the
    target's other metrics are: a necessary condition, never too narrow (a property test
    checks this against the condition itself)."""
    if isinstance(condition, MetricExceeds):
        return (condition.threshold, -math.inf) if condition.metric == metric else _ANY
    if isinstance(condition, MetricBelow):
        return (math.inf, condition.threshold) if condition.metric == metric else _ANY
    if isinstance(condition, ThresholdCondition):
        if condition.metric != metric or not is_instant(condition):
            return _ANY
        return _THRESHOLD_GUARDS[condition.operator](condition.threshold)
    if not isinstance(condition, AllOf | AnyOf):
        return _ANY  # an expression, or a condition ingest does not evaluate
    children = [guard(child, metric) for child in condition.conditions]
    if isinstance(condition, AnyOf):
        # The union of "v > a or v < b" parts is exactly "v > min(a) or v < max(b)".
        return (min(a for a, _ in children), max(b for _, b in children))
    assert isinstance(condition, AllOf)
    return _intersection(children)


def _intersection(children: list[Guard]) -> Guard:
    """The guard of an ``all_of`` whose children have the guards ``children``.

    Children that do not constrain the metric drop out. "v > a1 or v < b1" and "v > a2 or
    v < b2" meet in "v > max(a) or v < min(b)" plus the stretches between a1 and b2 and
    between a2 and b1: when such a stretch exists the answer has no simple form, and every
    value is let through (still never too narrow)."""
    above, below = _ANY
    for a, b in children:
        if (a, b) == _ANY:
            continue
        if (above, below) == _ANY:
            above, below = a, b
        elif above < b or a < below:
            return _ANY
        else:
            above, below = max(above, a), min(below, b)
    return (above, below)


_THRESHOLD_GUARDS: dict[str, Callable[[float], Guard]] = {
    ">": lambda t: (t, -math.inf),
    ">=": lambda t: (math.nextafter(t, -math.inf), -math.inf),
    "<": lambda t: (math.inf, t),
    "<=": lambda t: (math.inf, math.nextafter(t, math.inf)),
    "==": lambda t: (math.nextafter(t, -math.inf), -math.inf),
    "!=": lambda t: _ANY,
}
"""The guard of ``value OP t`` for each operator (``==`` keeps the values from ``t`` up)."""


@dataclass(frozen=True, slots=True)
class Violation:
    """A policy whose condition holds for a target."""

    policy: PolicySpec
    target: str
    value: float | None
    """The value of the sample that triggered it (None in a dry run without one)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """The triggering sample's tags (silences match on them)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How samples of one metric from one target are evaluated: the enabled policies that
    read the metric and apply to the target, in policy order, and a quick test that tells
    most samples they can violate none of them without calling a single condition."""

    candidates: tuple[PolicySpec, ...]
    checks: tuple[Check, ...]
    needs_other_metrics: bool
    """Whether any candidate reads another metric of the target too."""
    above: float
    below: float
    """A value ``v`` with ``below <= v <= above`` can violate only the ``unguarded`` ones."""
    unguarded: tuple[int, ...]
    """Positions of the candidates whose verdict the sample's value alone cannot settle."""

    def evaluate(
        self, target: str, value: float, values: Mapping[str, float], tags: Mapping[str, str]
    ) -> list[Violation]:
        """The candidates violated given the target's latest ``values`` (the new sample of
        value ``value`` included) and the sample's ``tags``, in policy order."""
        candidates, checks = self.candidates, self.checks
        if value > self.above or value < self.below:
            return [
                Violation(policy, target, value, tags)
                for policy, check in zip(candidates, checks, strict=True)
                if check(values, tags)
            ]
        return [
            Violation(candidates[i], target, value, tags)
            for i in self.unguarded
            if checks[i](values, tags)
        ]


class PolicyIndex:
    """Enabled policies; the instant ones indexed by the metric names their conditions read.

    Only policies that read a sample's metric can change their verdict when it arrives,
    so ingest evaluates just those. Policies that need stored samples (``for``, ``window``,
    ``rate``, ``absent``) are the runner's: they are listed in :attr:`historic`. Policies
    judged over what another system says are listed apart: :attr:`alerts` (Alertmanager's
    alerts) and :attr:`promql` (PromQL queries the runner asks).
    """

    def __init__(self, policies: Iterable[PolicySpec]) -> None:
        self.policies: tuple[PolicySpec, ...] = tuple(p for p in policies if p.enabled)
        self.instant: tuple[PolicySpec, ...] = tuple(
            p for p in self.policies if is_instant(p.condition)
        )
        self.historic: tuple[PolicySpec, ...] = tuple(
            p
            for p in self.policies
            if not is_instant(p.condition) and source_of(p.condition) == "samples"
        )
        self.alerts: tuple[PolicySpec, ...] = tuple(
            p for p in self.policies if source_of(p.condition) == "alerts"
        )
        self.promql: tuple[PolicySpec, ...] = tuple(
            p for p in self.policies if source_of(p.condition) == "promql"
        )
        self.metric_names: frozenset[str] = frozenset(
            name
            for p in self.policies
            for condition in (p.condition, p.clear)
            if condition is not None
            for name in metrics_of(condition)
        )
        """Every metric name an enabled policy reads (its condition or its ``clear``,
        instant or historic): the samples worth storing when not everything is."""
        by_metric: dict[str, list[PolicySpec]] = defaultdict(list)
        self._reads: dict[str, frozenset[str]] = {}
        for policy in self.instant:
            reads = metrics_of(policy.condition)
            self._reads[policy.name] = reads
            for metric in reads:
                by_metric[metric].append(policy)
        self._by_metric = {name: tuple(items) for name, items in by_metric.items()}
        self._checks: dict[str, Check] = {
            p.name: compile_condition(p.condition) for p in self.instant
        }
        self.clears: dict[str, Check | None] = {
            p.name: compile_condition(p.clear) if is_instant(p.clear) else None
            for p in self.instant
            if p.clear is not None
        }
        """The compiled ``clear`` of each instant policy that has one (None when it needs
        history: such a policy resolves only in the runner)."""
        self.plans: dict[tuple[str, str], Plan] = {}
        """Plans made so far, by (metric, target): look here before calling :meth:`plan`."""

    def __len__(self) -> int:
        return len(self.policies)

    def candidates(self, metric: str, target: str) -> list[PolicySpec]:
        """Enabled policies that read ``metric`` and apply to ``target``."""
        return [p for p in self._by_metric.get(metric, ()) if target_matches(p.target, target)]

    def needs_other_metrics(self, metric: str, target: str) -> bool:
        """Whether evaluating ``metric`` for ``target`` needs the target's other values."""
        return self.plan(metric, target).needs_other_metrics

    def plan(self, metric: str, target: str) -> Plan:
        """How to evaluate ``metric`` samples from ``target`` (remembered in :attr:`plans`:
        matching policy targets, globs included, is most of the work)."""
        key = (metric, target)
        found = self.plans.get(key)
        if found is not None:
            return found
        candidates = tuple(self.candidates(metric, target))
        guards = [guard(p.condition, metric) for p in candidates]
        guarded = [g for g in guards if g != _ANY]
        made = Plan(
            candidates=candidates,
            checks=tuple(self._checks[p.name] for p in candidates),
            needs_other_metrics=any(len(self._reads[p.name]) > 1 for p in candidates),
            above=min((a for a, _ in guarded), default=math.inf),
            below=max((b for _, b in guarded), default=-math.inf),
            unguarded=tuple(i for i, g in enumerate(guards) if g == _ANY),
        )
        if len(self.plans) >= _MAX_PLANS:
            self.plans.clear()
        self.plans[key] = made
        return made

    def evaluate_values(
        self, target: str, values: Mapping[str, float], tags: Mapping[str, str] | None = None
    ) -> list[Violation]:
        """Every enabled policy applying to ``target`` whose condition holds over ``values``,
        taken as sustained (a dry run: see :func:`compile_condition`)."""
        tags = tags or {}
        return [
            Violation(p, target, None, tags)
            for p in self.policies
            if target_matches(p.target, target)
            and compile_condition(p.condition, sustained=True)(values, tags)
        ]
