"""Backtest: replay stored samples through one policy's evaluation and guards with a
simulated clock, and say what it would have decided. Pure: the samples and the silences
of the range in, decisions out; nothing is read or written here.

The replay follows production: instant conditions are judged at each sample (as ingest
does), history conditions at simulated runner passes every ``interval`` seconds, and each
(policy, target) walks the same state machine. What it cannot know it assumes, and says so
in the documentation: a simulated action stays open until its episode resolves and ends
then (so the cooldown counts from the resolution, and the blast radius sees the targets
still firing); the global pause is not replayed; silences are, as they were at each moment.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vigil.decide.core import Guards, Limits, PairState, decide
from vigil.decide.state import Change, Phase
from vigil.policy.conditions import compile_condition, first_value, is_instant
from vigil.policy.history import Point, TargetView, Verdict, judge, lookbacks
from vigil.policy.matcher import target_matches
from vigil.policy.models import PolicySpec

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
    instant = is_instant(policy.condition)
    check = compile_condition(policy.condition) if instant else None
    clear_instant = policy.clear is None or is_instant(policy.clear)
    clear = compile_condition(policy.clear) if policy.clear is not None and clear_instant else None
    keep: dict[str, float] = {}
    for condition in (policy.condition, policy.clear):
        if condition is not None:
            keep.update(lookbacks(condition))
    pairs: dict[str, _Pair] = defaultdict(_Pair)
    decisions: list[dict[str, Any]] = []
    created: list[datetime] = []
    opened = [0]  # how many pairs have an open simulated action
    counted = 0

    def observe(
        target: str,
        pair: _Pair,
        verdict: Verdict,
        cleared: Verdict | None,
        now: datetime,
        value: float | None,
    ) -> None:
        """One evaluation of a pair, decided by the core as production decides it."""
        guards = Guards()
        if verdict is Verdict.TRUE:
            guards = Guards(
                auto_remediate=policy.auto_remediate,
                shadow=policy.shadow,
                cooldown_seconds=policy.cooldown_seconds,
                open_action=pair.open,
                last_ended_at=pair.last_ended,
                silenced=silenced(policy.name, target, pair.tags, now),
                limits=Limits(
                    max_actions_per_hour=policy.max_actions_per_hour,
                    actions_last_hour=len(created) - bisect_left(created, now - HOUR),
                    max_concurrent_targets=policy.max_concurrent_targets,
                    open_targets=opened[0],
                ),
            )
        step = decide(pair.state, verdict, guards, now, cleared=cleared)
        pair.state = step.state
        if step.change is Change.RESOLVED and pair.open:
            pair.open, pair.last_ended = False, now
            opened[0] -= 1
        decision = step.decision
        if decision is None:
            return
        if decision.repeat:
            decisions[_last(decisions, target)]["count"] += 1
            return
        if decision.acts:
            pair.open = True
            opened[0] += 1
            created.append(now)
        decisions.append(
            {
                "at": now,
                "target": target,
                "episode": pair.state.phase.episode,
                "value": value,
                "outcome": decision.outcome,
                "reason": None if decision.reason is None else decision.reason.value,
                "action": policy.action if decision.acts else None,
                "count": 1,
            }
        )

    def runner_pass(now: datetime) -> None:
        for target, pair in pairs.items():
            view = TargetView(pair.values, pair.seen, pair.series, pair.tags)
            firing = pair.state.phase.phase is Phase.FIRING
            if instant:
                if not firing or clear_instant:
                    continue  # ingest's business
                verdict = (
                    Verdict.TRUE
                    if check is not None and check(pair.values, pair.tags)
                    else Verdict.FALSE
                )
            else:
                verdict = judge(policy.condition, view, now)
            cleared = (
                judge(policy.clear, view, now) if policy.clear is not None and firing else None
            )
            observe(target, pair, verdict, cleared, now, first_value(policy.condition, pair.values))

    # Passes of the simulated runner, when the policy needs any (an instant policy whose
    # clear, if any, is instant too is judged at its samples alone).
    tick = start + timedelta(seconds=interval) if needs_runner(policy) else end + HOUR
    for ts, target, metric, value, tags in samples:
        while tick <= ts and tick <= end:
            runner_pass(tick)
            tick += timedelta(seconds=interval)
        if not target_matches(policy.target, target):
            continue
        counted += 1
        pair = pairs[target]
        if metric not in pair.seen or ts >= pair.seen[metric]:
            pair.values[metric], pair.seen[metric] = value, ts
        if tags:
            pair.tags = tags
        if metric in keep:
            points = pair.series[metric]
            points.append((ts, value))
            horizon = _minus(ts, keep[metric])
            while points and points[0][0] < horizon:
                points.pop(0)
        if instant and check is not None:
            holds = check(pair.values, tags)
            firing = pair.state.phase.phase is Phase.FIRING
            if holds:
                observe(target, pair, Verdict.TRUE, None, ts, value)
            elif firing and clear_instant:
                cleared = (
                    (
                        Verdict.TRUE
                        if clear is not None and clear(pair.values, tags)
                        else Verdict.FALSE
                    )
                    if policy.clear is not None
                    else None
                )
                observe(target, pair, Verdict.FALSE, cleared, ts, value)
    while tick <= end:
        runner_pass(tick)
        tick += timedelta(seconds=interval)
    return {"samples": counted, "decisions": decisions, "summary": _summary(decisions)}


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
