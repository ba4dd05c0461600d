"""One evaluation pass of the runner over stored samples.

Ingest judges instant conditions as samples arrive. The runner judges the rest: policies
with ``for``, ``window``, ``rate`` or ``absent`` (for every target that sent one of their
metrics, or that is pending or firing), and resolves instant policies' firing pairs whose
condition stopped holding without a sample saying so (a ``clear`` reading another metric, a
target gone quiet).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import metric_latest, metrics
from vigil.decide import episodes
from vigil.decide.episodes import Episode
from vigil.decide.observations import Observation, Pending, Settled
from vigil.decide.state import Phase
from vigil.policy.conditions import first_value, metrics_of
from vigil.policy.evaluator import PolicyIndex, Violation
from vigil.policy.history import Point, TargetView, Verdict, judge, lookbacks
from vigil.policy.matcher import target_matches
from vigil.policy.models import Condition, PolicySpec

Latest = dict[str, dict[str, tuple[float, datetime]]]
"""target → metric → (value, ts)."""


async def sweep(conn: AsyncConnection, *, index: PolicyIndex, now: datetime) -> list[Observation]:
    """What the stored samples say about each pair the runner looks after, as observations
    for :func:`vigil.decide.recorder.record_observations`."""
    unsettled = {e.pair: e for e in await episodes.unsettled(conn)}
    by_name = {p.name: p for p in index.policies}
    historic = index.historic
    instant_pairs = [
        (by_name[name], e)
        for (name, _), e in unsettled.items()
        if name in by_name and by_name[name] not in historic and by_name[name] not in index.promql
    ]
    gone = [e for (name, _), e in unsettled.items() if name not in by_name]
    if not historic and not instant_pairs and not gone:
        return []
    names, needs = _reads(historic, [p for p, _ in instant_pairs])
    latest = await _latest(conn, names)
    series, tags = await _series(conn, needs, now)

    def view(target: str, episode: Episode | None) -> TargetView:
        return _view(latest, series, tags, target, episode)

    observations: list[Observation] = []
    for policy in historic:
        targets = {
            t
            for t, values in latest.items()
            if any(m in values for m in metrics_of(policy.condition))
        }
        targets |= {target for (name, target) in unsettled if name == policy.name}
        for target in sorted(targets):
            episode = unsettled.get((policy.name, target))
            observation = _observe(policy, target, view(target, episode), episode, now)
            if observation is not None:
                observations.append(observation)
    for policy, episode in instant_pairs:
        if episode.phase.phase is Phase.FIRING and (
            not target_matches(policy.target, episode.target)
            or _resolves(policy, view(episode.target, episode), now)
        ):
            observations.append(Settled(policy, episode.target, episode.phase.episode))
    observations.extend(_settle_disabled(gone))
    return observations


def _reads(
    historic: Iterable[PolicySpec], instant: Iterable[PolicySpec]
) -> tuple[set[str], dict[str, float]]:
    """The metrics whose latest values the pass reads, and how far back it reads each one's
    samples: every metric of a history policy; of an instant one with a firing pair, what
    its ``clear`` needs."""
    names: set[str] = set()
    needs: dict[str, float] = {}

    def look_back(condition: Condition) -> None:
        for metric, seconds in lookbacks(condition).items():
            needs[metric] = max(needs.get(metric, 0.0), seconds)

    for policy in historic:
        for condition in (policy.condition, policy.clear):
            if condition is not None:
                names |= metrics_of(condition)
                look_back(condition)
    for policy in instant:
        names |= metrics_of(policy.condition)
        if policy.clear is not None:
            names |= metrics_of(policy.clear)
            look_back(policy.clear)
    return names, needs


def _settle_disabled(gone: Iterable[Episode]) -> list[Observation]:
    """A disabled policy's pairs settle (a deleted one's states went with it)."""
    settled: list[Observation] = []
    for episode in gone:
        placeholder = PolicySpec.model_validate(
            {
                "name": episode.policy_name,
                "condition": {"type": "metric_exceeds", "metric": "-", "threshold": 0},
                "action": "noop",
            }
        )
        settled.append(Settled(placeholder, episode.target, episode.phase.episode))
    return settled


def _observe(
    policy: PolicySpec, target: str, view: TargetView, episode: Episode | None, now: datetime
) -> Observation | None:
    if not target_matches(policy.target, target):
        # The policy's target changed: a pair it had settles.
        return None if episode is None else Settled(policy, target, episode.phase.episode)
    verdict = judge(policy.condition, view, now)
    phase = episode.phase.phase if episode is not None else Phase.OK
    if phase is Phase.FIRING:
        if _resolves(policy, view, now, verdict):
            return Settled(policy, target, episode.phase.episode if episode else None)
        if verdict is Verdict.TRUE:
            # Still firing: an attempt a silence or the pause held back may act now.
            return Violation(policy, target, first_value(policy.condition, view.values), view.tags)
        return None
    if verdict is Verdict.TRUE:
        return Violation(policy, target, first_value(policy.condition, view.values), view.tags)
    if verdict is Verdict.PENDING:
        return Pending(policy, target) if phase is not Phase.PENDING else None
    return Settled(policy, target) if phase is Phase.PENDING else None


def _resolves(
    policy: PolicySpec, view: TargetView, now: datetime, verdict: Verdict | None = None
) -> bool:
    """Whether a firing pair resolves: its ``clear`` holds or, without one, its condition
    does not (a pending one still counts as holding)."""
    if policy.clear is not None:
        return judge(policy.clear, view, now) is Verdict.TRUE
    if verdict is None:
        verdict = judge(policy.condition, view, now)
    return verdict is Verdict.FALSE


def _view(
    latest: Latest,
    series: dict[str, dict[str, list[Point]]],
    tags: dict[str, dict[str, str]],
    target: str,
    episode: Episode | None,
) -> TargetView:
    values = latest.get(target, {})
    return TargetView(
        values={name: v for name, (v, _) in values.items()},
        seen={name: ts for name, (_, ts) in values.items()},
        series=series.get(target, {}),
        tags=tags.get(target) or (episode.tags if episode is not None and episode.tags else {}),
    )


async def _latest(conn: AsyncConnection, names: Iterable[str]) -> Latest:
    wanted = sorted(set(names))
    found: Latest = defaultdict(dict)
    for start in range(0, len(wanted), 500):
        rows = await conn.execute(
            select(
                metric_latest.c.target,
                metric_latest.c.name,
                metric_latest.c.value,
                metric_latest.c.ts,
            ).where(metric_latest.c.name.in_(wanted[start : start + 500]))
        )
        for target, name, value, ts in rows:
            found[target][name] = (value, ts)
    return found


async def _series(
    conn: AsyncConnection, needs: dict[str, float], now: datetime
) -> tuple[dict[str, dict[str, list[Point]]], dict[str, dict[str, str]]]:
    """Each target's samples of each metric back as far as needed (oldest first), and the
    tags of each target's newest sample among them. One range read of ``(name, ts)`` per
    metric."""
    series: dict[str, dict[str, list[Point]]] = defaultdict(lambda: defaultdict(list))
    tags: dict[str, dict[str, str]] = {}
    newest: dict[str, datetime] = {}
    for metric, seconds in sorted(needs.items()):
        rows = await conn.execute(
            select(metrics.c.target, metrics.c.ts, metrics.c.value, metrics.c.tags)
            .where(
                metrics.c.name == metric,
                metrics.c.ts >= now - timedelta(seconds=seconds),
                metrics.c.ts <= now,
                metrics.c.target.is_not(None),
            )
            .order_by(metrics.c.ts, metrics.c.id)
        )
        for target, ts, value, sample_tags in rows:
            series[target][metric].append((ts, value))
            if target not in newest or ts >= newest[target]:
                newest[target] = ts
                tags[target] = sample_tags or {}
    return series, tags
