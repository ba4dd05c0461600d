"""Record what evaluations found: each (policy, target) moves through its states, and a
violation that starts a firing episode passes the guards and becomes an action, or is
suppressed -- every outcome written down as a decision.

The rules (issue 4): the policy's own action is created once per firing episode, on the
transition into ``firing``. While an episode fires, a violation whose attempt was suppressed
by a silence, the pause, shadow mode, a missing ``auto_remediate``, the blast radius or a
still-open action tries again; one suppressed by the cooldown or the circuit breaker does
not. The same suppression repeated within an episode counts on its decision row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions import episodes
from vigil.actions.approval import approval_fields
from vigil.actions.automation import get_state
from vigil.actions.episodes import Episode, NewDecision, Pair
from vigil.actions.silences import active_rules
from vigil.actions.status import OPEN, Status
from vigil.actions.store import (
    Action,
    create_action,
    create_actions,
    pair_states,
    policy_key,
)
from vigil.db.tables import actions, policy_guards
from vigil.errors import ActionAlreadyOpen
from vigil.guard.decide import PairState, decide, limit_reason
from vigil.guard.reasons import STICKY, Suppressed, outcome_of
from vigil.guard.silences import silencing
from vigil.notify.events import NotificationEvent
from vigil.notify.store import record_notification
from vigil.observability.audit import Actor
from vigil.observability.metrics import VigilMetrics
from vigil.policy.evaluator import Violation
from vigil.policy.history import Verdict
from vigil.policy.models import PolicySpec
from vigil.policy.state import Change, Phase, step

HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Pending:
    """The policy's condition holds for the target, but not yet for its ``for``."""

    policy: PolicySpec
    target: str


@dataclass(frozen=True, slots=True)
class Settled:
    """The pair stops firing (its ``clear`` holds, or its condition no longer does) or, if
    pending, goes back to ``ok``."""

    policy: PolicySpec
    target: str
    episode: int | None = None
    """The episode the caller saw (the runner reads before it locks): a pair that has
    started another episode since is left alone."""


Observation = Violation | Pending | Settled


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of one violation."""

    violation: Violation
    suppressed: Suppressed | None
    action: Action | None
    episode_action_id: int | None = None
    """Set when the violation belongs to an episode that already acted (and whose action
    has ended): nothing was attempted."""


@dataclass(slots=True)
class _Attempt:
    index: int
    violation: Violation
    episode: Episode
    reason: Suppressed | None = None
    followers: list[tuple[int, Violation]] = field(default_factory=list)
    """Later violations of the same pair in the same call: (result index, violation)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :func:`record_observations` did."""

    decisions: list[Decision]
    firing_changed: bool
    """Whether a pair started or stopped firing: the caller calls
    :func:`vigil.actions.episodes.bump_firing` before it commits (last, so that no lock is
    taken after that row's)."""


async def record_observations(
    conn: AsyncConnection, *, observations: Sequence[Observation], now: datetime, actor: Actor
) -> Recorded:
    """Apply ``observations`` in order to their pairs' states; the decision on each violation.

    The guards are decided for all attempts first (a pair that gets an action is open for
    the attempts after it), then the actions are created together; should another process
    have opened one of them meanwhile, they are created one by one instead, and that one is
    suppressed as ``action already open``. A later violation of a pair whose attempt is
    being decided in this same call follows that attempt's outcome.
    """
    pairs = [(o.policy.name, o.target) for o in observations]
    states = await episodes.load(conn, pairs=pairs)
    acting_pairs = [
        (policy_key(o.policy.name), o.target)
        for o in observations
        if isinstance(o, Violation) and o.policy.auto_remediate
    ]
    actions_of = await pair_states(conn, pairs=acting_pairs)
    dirty: set[Pair] = set()
    firing_changed = False
    results: list[Decision | None] = []
    attempts: list[_Attempt] = []
    deciding: dict[Pair, _Attempt] = {}
    book = _Book(dirty)

    for observation in observations:
        pair = (observation.policy.name, observation.target)
        episode = states.get(pair)
        if episode is None:
            episode = states[pair] = Episode(*pair)
        if not isinstance(observation, Violation):
            if (
                isinstance(observation, Settled)
                and observation.episode is not None
                and observation.episode != episode.phase.episode
            ):
                continue  # another episode began since the caller looked
            verdict = Verdict.PENDING if isinstance(observation, Pending) else Verdict.FALSE
            cleared = Verdict.TRUE if isinstance(observation, Settled) else None
            if observation.policy.clear is None:
                cleared = None
            phase, change = step(episode.phase, verdict, cleared, now)
            if change is not None:
                episode.phase = phase  # in place: an attempt of this episode may hold it
                dirty.add(pair)
                firing_changed |= change is Change.RESOLVED
                deciding.pop(pair, None)
            continue
        violation = observation
        if episode.phase.phase is not Phase.FIRING:
            phase, _ = step(episode.phase, Verdict.TRUE, None, now)
            episode = states[pair] = episode.new_episode(phase)
            episode.tags = dict(violation.tags) or None
            dirty.add(pair)
            firing_changed = True
            attempt = _Attempt(len(results), violation, episode)
            attempts.append(attempt)
            deciding[pair] = attempt
            results.append(None)
            continue
        leader = deciding.get(pair)
        if leader is not None:
            leader.followers.append((len(results), violation))
            results.append(None)
            continue
        key = (policy_key(violation.policy.name), violation.target)
        if episode.acted:
            if actions_of.get(key, PairState()).open_action_id is None:
                results.append(Decision(violation, None, None, episode.action_id))
                continue
            reason = Suppressed.ALREADY_OPEN
        elif episode.reason is not None and Suppressed(episode.reason) in STICKY:
            reason = Suppressed(episode.reason)
        else:
            attempt = _Attempt(len(results), violation, episode)
            attempts.append(attempt)
            deciding[pair] = attempt
            results.append(None)
            continue
        results.append(book.suppressed(violation, episode, reason))

    if attempts:
        await _decide(conn, attempts, actions_of, now)
        await _limit(conn, attempts, actions_of, now)
        created = await _create(conn, [a for a in attempts if a.reason is None], now, actor)
        for attempt in attempts:
            violation, episode = attempt.violation, attempt.episode
            action = created.get(attempt.index) if attempt.reason is None else None
            if attempt.reason is None and action is None:
                attempt.reason = Suppressed.ALREADY_OPEN  # lost a race with another process
            if action is not None:
                episode.acted = True
                episode.action_id = action.id
                episode.reason = None
                book.acted(violation, episode, action)
                results[attempt.index] = Decision(violation, None, action)
                follow = Suppressed.ALREADY_OPEN  # the action just created is open
            else:
                assert attempt.reason is not None
                results[attempt.index] = book.suppressed(violation, episode, attempt.reason)
                follow = attempt.reason
            for index, follower in attempt.followers:
                results[index] = book.suppressed(follower, episode, follow)
    await book.write(conn, now)
    await episodes.save(conn, episodes=[states[p] for p in dirty], now=now)
    return Recorded([d for d in results if d is not None], firing_changed)


class _Book:
    """The decision rows to write: new ones (a pair's repeated suppression within this
    call counts on its new row) and repeats of rows already stored. A new row changes its
    episode (its reason and decision), which then goes into ``dirty`` to be saved; a repeat
    changes nothing there, so a pair that keeps violating is not rewritten each sample."""

    def __init__(self, dirty: set[Pair]) -> None:
        self.dirty = dirty
        self.fresh: list[tuple[Episode, NewDecision]] = []
        self._open: dict[tuple[Pair, int], int] = {}
        self.repeats: list[int] = []

    def suppressed(self, violation: Violation, episode: Episode, reason: Suppressed) -> Decision:
        key = (episode.pair, episode.phase.episode)
        if episode.reason == reason.value:
            if key in self._open:
                self.fresh[self._open[key]][1].count += 1
                return Decision(violation, reason, None)
            if episode.decision_id is not None:
                self.repeats.append(episode.decision_id)
                return Decision(violation, reason, None)
        episode.reason = reason.value
        self.dirty.add(episode.pair)
        self._open[key] = len(self.fresh)
        self.fresh.append((episode, _row(violation, episode, reason, None)))
        return Decision(violation, reason, None)

    def acted(self, violation: Violation, episode: Episode, action: Action) -> None:
        self._open.pop((episode.pair, episode.phase.episode), None)
        self.dirty.add(episode.pair)
        self.fresh.append((episode, _row(violation, episode, None, action.id)))

    async def write(self, conn: AsyncConnection, now: datetime) -> None:
        ids = await episodes.add_decisions(conn, items=[d for _, d in self.fresh], now=now)
        for (episode, _), decision_id in zip(self.fresh, ids, strict=True):
            episode.decision_id = decision_id  # the last one written wins: the newest
        await episodes.count_again(conn, ids=self.repeats, now=now)


def _row(
    violation: Violation, episode: Episode, reason: Suppressed | None, action_id: int | None
) -> NewDecision:
    return NewDecision(
        policy_name=violation.policy.name,
        target=violation.target,
        severity=violation.policy.severity,
        episode=episode.phase.episode,
        value=violation.value,
        outcome=outcome_of(reason),
        reason=None if reason is None else reason.value,
        action_id=action_id,
    )


async def _decide(
    conn: AsyncConnection,
    attempts: list[_Attempt],
    actions_of: dict[tuple[str, str], PairState],
    now: datetime,
) -> None:
    """The guards that need no counting: mode, open action, cooldown, silence, pause."""
    acting = any(a.violation.policy.auto_remediate for a in attempts)
    paused = acting and (await get_state(conn)).paused
    rules = await active_rules(conn, now=now) if acting else []
    for attempt in attempts:
        violation = attempt.violation
        policy = violation.policy
        key = (policy_key(policy.name), violation.target)
        attempt.reason = decide(
            auto_remediate=policy.auto_remediate,
            enabled=policy.enabled,
            cooldown_seconds=policy.cooldown_seconds,
            state=actions_of.get(key, PairState()),
            now=now,
            silenced=bool(rules)
            and silencing(
                rules, policy=policy.name, target=violation.target, tags=violation.tags, now=now
            )
            is not None,
            paused=paused,
            shadow=policy.shadow,
        )
        if attempt.reason is None:
            actions_of[key] = PairState(open_action_id=-1)  # opened by this attempt


async def _limit(
    conn: AsyncConnection,
    attempts: list[_Attempt],
    actions_of: dict[tuple[str, str], PairState],
    now: datetime,
) -> None:
    """The breaker and the blast radius, counted under each policy's guard-row lock."""
    limited = sorted(
        {
            a.violation.policy.name: a.violation.policy
            for a in attempts
            if a.reason is None
            and (
                a.violation.policy.max_actions_per_hour is not None
                or a.violation.policy.max_concurrent_targets is not None
            )
        }.items()
    )
    if not limited:
        return
    guards = await lock_guards(conn, names=[name for name, _ in limited])
    for name, policy in limited:
        guard = guards[name]
        recent = await actions_in_hour(conn, policy_name=name, now=now, reset_at=guard.reset_at)
        open_targets = await open_target_count(conn, policy_name=name)
        for attempt in attempts:
            if attempt.reason is not None or attempt.violation.policy.name != name:
                continue
            attempt.reason = limit_reason(
                max_actions_per_hour=policy.max_actions_per_hour,
                actions_last_hour=recent,
                max_concurrent_targets=policy.max_concurrent_targets,
                open_targets=open_targets,
            )
            if attempt.reason is None:
                recent += 1
                open_targets += 1
                continue
            if attempt.reason is Suppressed.CIRCUIT_OPEN:
                guard = await _breaker_opened(
                    conn, guard, policy, attempt.violation.target, recent, now
                )
            key = (policy_key(name), attempt.violation.target)
            actions_of[key] = PairState()  # not opened after all


async def _breaker_opened(
    conn: AsyncConnection, guard: Guard, policy: PolicySpec, target: str, recent: int, now: datetime
) -> Guard:
    """Note that the breaker stopped an action: the first time in its hour, it opened --
    record when, and a ``breaker_opened`` notification."""
    if guard.opened_at is not None and guard.opened_at >= now - HOUR:
        return guard
    await conn.execute(
        policy_guards.update()
        .where(policy_guards.c.policy_name == policy.name)
        .values(opened_at=now)
    )
    await record_notification(
        conn,
        now=now,
        event=NotificationEvent.BREAKER_OPENED,
        policy_name=policy.name,
        target=target,
        reason=f"policy {policy.name} created {recent} actions within the hour"
        f" (max_actions_per_hour {policy.max_actions_per_hour}); it acts again once they"
        f" age out, or after POST /api/v1/policies/{policy.name}/reset",
        details={"actions_last_hour": recent, "max_actions_per_hour": policy.max_actions_per_hour},
    )
    return replace(guard, opened_at=now)


async def approval_waiting(conn: AsyncConnection, *, record: Action, now: datetime) -> None:
    """A ``approval_waiting`` notification for an action created awaiting approval."""
    assert record.approval_expires_at is not None
    await record_notification(
        conn,
        now=now,
        event=NotificationEvent.APPROVAL_WAITING,
        policy_name=record.policy_name,
        target=record.target,
        action_id=record.id,
        reason=f"action {record.action} on {record.target} awaits approval until"
        f" {record.approval_expires_at.isoformat()}: POST /api/v1/actions/{record.id}"
        "/approve or /reject",
        details={"action": record.action, "params": record.params},
    )


async def restrict(
    conn: AsyncConnection, *, policy: PolicySpec, target: str, now: datetime
) -> Suppressed | None:
    """The breaker and the blast radius for one more action of ``policy`` on ``target``,
    under the policy's guard-row lock (held until the transaction ends)."""
    if policy.max_actions_per_hour is None and policy.max_concurrent_targets is None:
        return None
    guard = (await lock_guards(conn, names=[policy.name]))[policy.name]
    recent = await actions_in_hour(conn, policy_name=policy.name, now=now, reset_at=guard.reset_at)
    reason = limit_reason(
        max_actions_per_hour=policy.max_actions_per_hour,
        actions_last_hour=recent,
        max_concurrent_targets=policy.max_concurrent_targets,
        open_targets=await open_target_count(conn, policy_name=policy.name),
    )
    if reason is Suppressed.CIRCUIT_OPEN:
        await _breaker_opened(conn, guard, policy, target, recent, now)
    return reason


@dataclass(frozen=True, slots=True)
class Guard:
    policy_name: str
    reset_at: datetime | None
    opened_at: datetime | None


async def lock_guards(conn: AsyncConnection, *, names: Sequence[str]) -> dict[str, Guard]:
    """Each policy's guard row, created if missing and locked until the transaction ends
    (on SQLite the write transaction already excludes every other writer)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(
        insert(policy_guards).on_conflict_do_nothing(index_elements=[policy_guards.c.policy_name]),
        [{"policy_name": name} for name in names],
    )
    query = (
        select(policy_guards)
        .where(policy_guards.c.policy_name.in_(names))
        .order_by(policy_guards.c.policy_name)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = await conn.execute(query)
    return {r.policy_name: Guard(r.policy_name, r.reset_at, r.opened_at) for r in rows}


async def actions_in_hour(
    conn: AsyncConnection, *, policy_name: str, now: datetime, reset_at: datetime | None
) -> int:
    """Actions the policy created in the last hour (since its breaker's reset, if later)."""
    since = now - HOUR
    if reset_at is not None and reset_at > since:
        since = reset_at
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(actions)
                .where(actions.c.policy_name == policy_name, actions.c.created_at > since)
            )
        ).scalar_one()
    )


async def open_target_count(conn: AsyncConnection, *, policy_name: str) -> int:
    """How many targets have an open action of the policy."""
    return int(
        (
            await conn.execute(
                select(func.count(func.distinct(actions.c.target))).where(
                    actions.c.dedup_key == policy_key(policy_name),
                    actions.c.status.in_(tuple(s.value for s in OPEN)),
                )
            )
        ).scalar_one()
    )


async def _create(
    conn: AsyncConnection, acting: list[_Attempt], now: datetime, actor: Actor
) -> dict[int, Action]:
    """Create the actions of ``acting``; each created one by its attempt's index."""
    if not acting:
        return {}
    items = [_new_action(a.violation, a.episode, now) for a in acting]
    try:
        records: list[Action | None] = list(
            await create_actions(conn, now=now, actor=actor, items=items)
        )
    except ActionAlreadyOpen:
        records = []
        for item in items:
            try:
                records.append(await create_action(conn, now=now, actor=actor, **item))
            except ActionAlreadyOpen:
                # Another process created it between our read and our insert.
                records.append(None)
    for record in records:
        if record is not None and record.status == Status.AWAITING_APPROVAL.value:
            await approval_waiting(conn, record=record, now=now)
    return {
        attempt.index: record
        for attempt, record in zip(acting, records, strict=True)
        if record is not None
    }


def _new_action(violation: Violation, episode: Episode, now: datetime) -> dict[str, Any]:
    policy = violation.policy
    item: dict[str, Any] = {
        "dedup_key": policy_key(policy.name),
        "policy_name": policy.name,
        "target": violation.target,
        "action": policy.action,
        "params": dict(policy.params),
        "severity": policy.severity,
        "trigger_value": violation.value,
        "details": _details(violation),
        "reason": f"policy {policy.name} violated",
        "episode": episode.phase.episode,
    }
    if policy.approval_required:
        item |= approval_fields(policy, now)
        item["reason"] = f"policy {policy.name} violated; awaiting approval"
    return item


def _details(violation: Violation) -> str:
    value = "" if violation.value is None else f" (value {violation.value:g})"
    return f"{violation.policy.description or violation.policy.name}{value}"


async def breaker_state(
    conn: AsyncConnection, *, policy: PolicySpec, now: datetime
) -> dict[str, Any]:
    """The policy's circuit breaker: open while it has created ``max_actions_per_hour``
    actions within the hour (counted since its last reset)."""
    row = (
        await conn.execute(select(policy_guards).where(policy_guards.c.policy_name == policy.name))
    ).one_or_none()
    reset_at = row.reset_at if row is not None else None
    recent = await actions_in_hour(conn, policy_name=policy.name, now=now, reset_at=reset_at)
    limit = policy.max_actions_per_hour
    return {
        "open": limit is not None and recent >= limit,
        "actions_last_hour": recent,
        "max_actions_per_hour": limit,
        "opened_at": row.opened_at if row is not None else None,
        "reset_at": reset_at,
        "open_targets": await open_target_count(conn, policy_name=policy.name),
        "max_concurrent_targets": policy.max_concurrent_targets,
    }


async def reset_breaker(conn: AsyncConnection, *, policy_name: str, now: datetime) -> None:
    """Close the policy's breaker: only actions created after now count against it."""
    await lock_guards(conn, names=[policy_name])
    await conn.execute(
        policy_guards.update()
        .where(policy_guards.c.policy_name == policy_name)
        .values(reset_at=now, opened_at=None)
    )


def count_decisions(metrics: VigilMetrics, decisions: Sequence[Decision]) -> None:
    """Count violations, decisions and created actions in the Prometheus metrics."""
    for d in decisions:
        policy = d.violation.policy
        metrics.policy_violations_total.labels(
            policy_name=policy.name, severity=policy.severity
        ).inc()
        if d.episode_action_id is not None:
            continue  # the episode acted already: nothing was decided
        metrics.decisions_total.labels(
            outcome=outcome_of(d.suppressed),
            reason="" if d.suppressed is None else d.suppressed.value,
        ).inc()
        if d.action is not None:
            metrics.actions_total.labels(action=d.action.action, status=d.action.status).inc()
