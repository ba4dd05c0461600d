"""Backtest: replay stored samples through one policy's evaluation and guards with a
simulated clock, and say what it would have decided. Pure: the samples and the silences
of the range in, decisions out; nothing is read or written here.

The replay follows production: instant conditions are judged at each sample (as ingest
does), history conditions at simulated runner passes every ``interval`` seconds, and each
(policy, target) walks the same state machine. What it cannot know it assumes, and says so
in the documentation: a simulated action stays open until its episode resolves and ends
then (so the cooldown counts from the resolution, and the blast radius sees the targets
still firing); the global pause is not replayed; silences are, as they were at each moment.
A ``promql`` policy is replayed over its queries' range answers, one simulated pass at each
step of the range.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from vigil.decide.core import Guards, Limits, PairState, decide
from vigil.decide.observations import verdicts
from vigil.decide.state import Change, Phase
from vigil.policy.conditions import compile_condition, first_value, is_instant
from vigil.policy.evaluator import Violation
from vigil.policy.history import Point, TargetView, Verdict, judge, lookbacks
from vigil.policy.matcher import target_matches
from vigil.policy.models import PolicySpec
from vigil.policy.promql import Found
from vigil.policy.promql import judge as judge_promql

Sample = tuple[datetime, str, str, float, Mapping[str, str]]
"""(ts, target, metric, value, tags), as stored."""

Silenced = Callable[[str, str, Mapping[str, str], datetime], bool]
"""Whether a silence held back (policy, target, tags) at a moment."""

HOUR = timedelta(hours=1)


@dataclass(slots=True)
class _Pair:
    state: PairState = field(default_factory=PairState)
    values: dict[str, float] = field(default_factory=dict)
    seen: dict[str, datetime] = field(default_factory=dict)
    series: dict[str, list[Point]] = field(default_factory=lambda: defaultdict(list))
    tags: Mapping[str, str] = field(default_factory=dict)
    open: bool = False
    """The simulated action of the pair is open (it stays open until its episode resolves)."""
    last_ended: datetime | None = None

    def remember(
        self,
        ts: datetime,
        metric: str,
        value: float,
        tags: Mapping[str, str],
        lookback: float | None,
    ) -> None:
        """Keep a sample: the latest value, the tags, and the series a condition looks back on."""
        if metric not in self.seen or ts >= self.seen[metric]:
            self.values[metric], self.seen[metric] = value, ts
        if tags:
            self.tags = tags
        if lookback is not None:
            points = self.series[metric]
            points.append((ts, value))
            horizon = _minus(ts, lookback)
            while points and points[0][0] < horizon:
                points.pop(0)


def backtest(
    policy: PolicySpec,
    samples: Iterable[Sample],
    *,
    start: datetime,
    end: datetime,
    interval: float,
    silenced: Silenced,
) -> dict[str, Any]:
    """The decisions ``policy`` would have made over ``samples`` (sorted by time) from
    ``start`` to ``end``, and their summary."""
    replay = _Replay(policy, silenced)
    # Passes of the simulated runner, when the policy needs any (an instant policy whose
    # clear, if any, is instant too is judged at its samples alone).
    tick = start + timedelta(seconds=interval) if needs_runner(policy) else end + HOUR
    for sample in samples:
        while tick <= sample[0] and tick <= end:
            replay.runner_pass(tick)
            tick += timedelta(seconds=interval)
        replay.sample(*sample)
    while tick <= end:
        replay.runner_pass(tick)
        tick += timedelta(seconds=interval)
    decisions = replay.decisions
    return {"samples": replay.counted, "decisions": decisions, "summary": _summary(decisions)}


class _Replay:
    """The simulated pairs of one policy, as ingest and the runner would have seen them."""

    def __init__(self, policy: PolicySpec, silenced: Silenced) -> None:
        self.policy = policy
        self.silenced = silenced
        self.instant = is_instant(policy.condition)
        self.check = compile_condition(policy.condition) if self.instant else None
        self.clear_instant = policy.clear is None or is_instant(policy.clear)
        self.clear = (
            compile_condition(policy.clear)
            if policy.clear is not None and self.clear_instant
            else None
        )
        self.keep: dict[str, float] = {}
        for condition in (policy.condition, policy.clear):
            if condition is not None:
                self.keep.update(lookbacks(condition))
        self.pairs: dict[str, _Pair] = defaultdict(_Pair)
        self.decisions: list[dict[str, Any]] = []
        self.created: list[datetime] = []
        self.opened = 0
        """How many pairs have an open simulated action."""
        self.counted = 0

    def sample(
        self, ts: datetime, target: str, metric: str, value: float, tags: Mapping[str, str]
    ) -> None:
        """A stored sample arrives: what ingest judged of it."""
        if not target_matches(self.policy.target, target):
            return
        self.counted += 1
        pair = self.pairs[target]
        pair.remember(ts, metric, value, tags, self.keep.get(metric))
        if not self.instant or self.check is None:
            return
        if self.check(pair.values, tags):
            self.observe(target, pair, Verdict.TRUE, None, ts, value)
        elif pair.state.phase.phase is Phase.FIRING and self.clear_instant:
            cleared = None
            if self.policy.clear is not None:
                holds = self.clear is not None and self.clear(pair.values, tags)
                cleared = Verdict.TRUE if holds else Verdict.FALSE
            self.observe(target, pair, Verdict.FALSE, cleared, ts, value)

    def runner_pass(self, now: datetime) -> None:
        """A simulated runner pass: what the runner judged of each pair."""
        policy = self.policy
        for target, pair in self.pairs.items():
            view = TargetView(pair.values, pair.seen, pair.series, pair.tags)
            firing = pair.state.phase.phase is Phase.FIRING
            if self.instant:
                if not firing or self.clear_instant:
                    continue  # ingest's business
                holds = self.check is not None and self.check(pair.values, pair.tags)
                verdict = Verdict.TRUE if holds else Verdict.FALSE
            else:
                verdict = judge(policy.condition, view, now)
            cleared = (
                judge(policy.clear, view, now) if policy.clear is not None and firing else None
            )
            value = first_value(policy.condition, pair.values)
            self.observe(target, pair, verdict, cleared, now, value)

    def observe(
        self,
        target: str,
        pair: _Pair,
        verdict: Verdict,
        cleared: Verdict | None,
        now: datetime,
        value: float | None,
    ) -> None:
        """One evaluation of a pair, decided by the core as production decides it."""
        guards = partial(self._guards, target, pair, now)
        step = decide(pair.state, verdict, guards, now, cleared=cleared)
        pair.state = step.state
        if step.change is Change.RESOLVED and pair.open:
            pair.open, pair.last_ended = False, now
            self.opened -= 1
        decision = step.decision
        if decision is None:
            return
        if decision.repeat:
            self.decisions[_last(self.decisions, target)]["count"] += 1
            return
        if decision.acts:
            pair.open = True
            self.opened += 1
            self.created.append(now)
        self.decisions.append(
            {
                "at": now,
                "target": target,
                "episode": pair.state.phase.episode,
                "value": value,
                "outcome": decision.outcome,
                "reason": None if decision.reason is None else decision.reason.value,
                "action": self.policy.action if decision.acts else None,
                "count": 1,
            }
        )

    def _guards(self, target: str, pair: _Pair, now: datetime) -> Guards:
        """What the guards would have read: the pause is not replayed; silences are."""
        policy = self.policy
        return Guards(
            auto_remediate=policy.auto_remediate,
            shadow=policy.shadow,
            cooldown_seconds=policy.cooldown_seconds,
            open_action=pair.open,
            last_ended_at=pair.last_ended,
            silenced=self.silenced(policy.name, target, pair.tags, now),
            limits=Limits(
                max_actions_per_hour=policy.max_actions_per_hour,
                actions_last_hour=len(self.created) - bisect_left(self.created, now - HOUR),
                max_concurrent_targets=policy.max_concurrent_targets,
                open_targets=self.opened,
            ),
        )


def needs_runner(policy: PolicySpec) -> bool:
    """Whether replaying ``policy`` takes simulated runner passes."""
    return not is_instant(policy.condition) or (
        policy.clear is not None and not is_instant(policy.clear)
    )


def _minus(when: datetime, seconds: float) -> datetime:
    try:
        return when - timedelta(seconds=seconds)
    except OverflowError:
        return datetime.min.replace(tzinfo=when.tzinfo)


def _last(decisions: list[dict[str, Any]], target: str) -> int:
    for i in range(len(decisions) - 1, -1, -1):
        if decisions[i]["target"] == target:
            return i
    raise LookupError(target)


def _summary(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    suppressed: Counter[str] = Counter()
    targets: dict[str, dict[str, Any]] = {}
    acted = 0
    for d in decisions:
        entry = targets.setdefault(
            d["target"], {"acted": 0, "suppressed": 0, "first": d["at"], "last": d["at"]}
        )
        entry["last"] = d["at"]
        if d["outcome"] == "acted":
            acted += 1
            entry["acted"] += 1
        else:
            suppressed[d["reason"]] += d["count"]
            entry["suppressed"] += d["count"]
    return {"acted": acted, "suppressed": dict(suppressed), "targets": targets}


PromQLPass = tuple[datetime, Found, Found | None]
"""A simulated runner pass of a ``promql`` policy: its time, what the query returned then,
and what the ``clear`` query did (None without one)."""


def backtest_promql(
    policy: PolicySpec, passes: Iterable[PromQLPass], *, points: int, silenced: Silenced
) -> dict[str, Any]:
    """The decisions a ``promql`` policy would have made at ``passes`` (in time order),
    judged as the runner judges them (:func:`vigil.policy.promql.judge`); ``points`` is how
    many samples the range queries returned."""
    replay = _Replay(policy, silenced)
    replay.counted = points
    for now, found, cleared in passes:
        phases = {
            target: pair.state.phase
            for target, pair in replay.pairs.items()
            if pair.state.phase.phase in (Phase.PENDING, Phase.FIRING)
        }
        for observation in judge_promql(policy, found, cleared, phases, now):
            pair = replay.pairs[observation.target]
            value = None
            if isinstance(observation, Violation):
                pair.tags, value = observation.tags, observation.value
            verdict, clear_verdict = verdicts(observation)
            replay.observe(observation.target, pair, verdict, clear_verdict, now, value)
    decisions = replay.decisions
    return {"samples": replay.counted, "decisions": decisions, "summary": _summary(decisions)}
