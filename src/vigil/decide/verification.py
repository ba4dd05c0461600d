"""Verification and escalation: did the fix work?

After a policy's action completes, the runner checks that the policy resolved for that
target within the policy's ``verify.within_seconds``, and records ``verified`` or ``failed``
on the action (its ``verification`` field and a history row). A failure creates the next
action of the policy's ``escalate`` list for the same target and episode, subject to the
guards; once the list is exhausted the episode is marked escalated.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.approval import approval_fields, approval_waiting
from vigil.actions.status import Status
from vigil.actions.store import Action, PairActions, create_action, pair_states, policy_key
from vigil.db.tables import action_history, actions
from vigil.decide import core, episodes
from vigil.decide.breaker import Guard, breaker_opened, is_limited, lock_guards, locked_limits
from vigil.decide.core import Guards, Trigger
from vigil.decide.episodes import Episode, NewDecision
from vigil.decide.reasons import Suppressed
from vigil.decide.state import Phase
from vigil.errors import ActionAlreadyOpen
from vigil.ingest.store import lock_targets
from vigil.notify.events import NotificationEvent
from vigil.notify.store import record_notification
from vigil.observability.audit import Actor, append_audit
from vigil.policy.history import Verdict
from vigil.policy.models import PolicySpec


@dataclass(frozen=True, slots=True)
class Verified:
    """What one verification found, and what it started."""

    action_id: int
    result: str
    """``verified``, ``failed`` or ``inconclusive``."""
    escalation: Action | None = None
    """The escalation action created, if any."""
    suppressed: Suppressed | None = None
    """Why the escalation was held back, if it was."""
    decided: bool = False
    """An escalation was decided (created or held back): a decision, counted as ingest's are."""
    held: bool = False
    """Held back by something that ends: no verdict is recorded yet (it is at a later pass)."""
    exhausted: bool = False
    """The escalation list was exhausted: the episode is marked escalated."""


async def verify(
    conn: AsyncConnection,
    *,
    policies: Mapping[str, PolicySpec],
    now: datetime,
    paused: bool,
    silenced: Any,
    actor: Actor,
    limit: int = 200,
    outages: Mapping[str, tuple[datetime, datetime]] | None = None,
    unknown: Mapping[tuple[str, str], int] | None = None,
    wanted: Collection[NotificationEvent] = frozenset(),
) -> list[Verified]:
    """Verify the completed actions of policies with ``verify`` whose result is due.

    ``silenced(policy, target, tags)`` says whether an active silence holds back an
    escalation; ``paused`` whether automation is paused. ``outages`` gives, by policy, the
    last span (start, end) during which the policy's condition could not be judged (its
    TSDB did not answer): a window open when it began is longer by its length. ``unknown``
    gives, by (policy, target), an episode that resolved for want of news rather than by
    news of its resolution (its alert went stale): its actions are ``inconclusive``.

    A verdict is told as an ``action_verified`` or ``action_unverified`` notification when
    ``wanted`` (the events the notifications file records) holds it; an exhausted escalation
    always as ``escalation_exhausted``.
    """
    verifying = [name for name, p in policies.items() if p.verify is not None]
    if not verifying:
        return []
    rows = (
        await conn.execute(
            select(actions)
            .where(
                actions.c.status == Status.COMPLETED.value,
                actions.c.verification.is_(None),
                actions.c.policy_name.in_(verifying),
                actions.c.episode.is_not(None),
            )
            .order_by(actions.c.id)
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    # Locks in the order ingest takes them (targets, guard rows, then the audit chain's
    # tail), so this transaction cannot deadlock with an ingest group; holding the targets
    # also keeps ingest from changing these pairs' states under us.
    await lock_targets(conn, targets=(r.target for r in rows))
    limited = {r.policy_name for r in rows if is_limited(policies[r.policy_name])}
    if limited:
        await lock_guards(conn, names=sorted(limited))
    states = await episodes.load(conn, pairs=[(r.policy_name, r.target) for r in rows])
    found: list[Verified] = []
    for row in rows:
        policy = policies[row.policy_name]
        assert policy.verify is not None
        within = policy.verify.within_seconds
        deadline = _extended(
            row.completed_at, row.completed_at + timedelta(seconds=within), outages, row.policy_name
        )
        episode = states.get((row.policy_name, row.target))
        if _resolved(episode, row.episode, deadline):
            stale = unknown is not None and unknown.get(_pair(row)) == row.episode
            result = "inconclusive" if stale else "verified"
        elif now >= deadline:
            result = "failed"
        else:
            continue  # not yet: the window is still open
        outcome = Verified(row.id, result)
        still_firing = (
            episode is not None
            and episode.phase.episode == row.episode
            and episode.phase.phase is Phase.FIRING
        )
        if result == "failed" and episode is not None and still_firing:
            outcome = await _escalate(
                conn,
                policy=policy,
                episode=episode,
                step=row.escalation_step,
                outcome=outcome,
                now=now,
                paused=paused,
                silenced=silenced,
                actor=actor,
            )
            if outcome.held:
                # Held back by something that ends (a silence, the pause, an open action,
                # the blast radius): try again next pass; the verdict is recorded then.
                found.append(outcome)
                continue
        if await _record(conn, row=row, result=result, within=within, now=now, actor=actor):
            await _notify(conn, row=row, result=result, within=within, now=now, wanted=wanted)
            await _exhausted(conn, policy=policy, episode=episode, outcome=outcome, now=now)
            found.append(outcome)
    return found


_VERDICTS = {
    "verified": NotificationEvent.ACTION_VERIFIED,
    "failed": NotificationEvent.ACTION_UNVERIFIED,
}
"""The notification of each verdict (``inconclusive`` tells nothing: it says nothing of the
action)."""


async def _notify(
    conn: AsyncConnection,
    *,
    row: Any,
    result: str,
    within: float,
    now: datetime,
    wanted: Collection[NotificationEvent],
) -> None:
    """An ``action_verified`` / ``action_unverified`` notification, when wanted."""
    event = _VERDICTS.get(result)
    if event is None or event not in wanted:
        return
    if event is NotificationEvent.ACTION_VERIFIED:
        told = f"the policy resolved within {within:g}s"
    else:
        told = f"the policy still fired {within:g}s after it completed"
    await record_notification(
        conn,
        now=now,
        event=event,
        policy_name=row.policy_name,
        target=row.target,
        action_id=row.id,
        reason=f"{row.action} on {row.target}: {told}",
        details={"action": row.action, "result": result, "within_seconds": within},
        severity=row.severity,
        tags=row.tags,
        episode=row.episode,
    )


async def _exhausted(
    conn: AsyncConnection,
    *,
    policy: PolicySpec,
    episode: Episode | None,
    outcome: Verified,
    now: datetime,
) -> None:
    """The ``escalation_exhausted`` notification when ``outcome`` found nothing left to try
    for the episode."""
    if not outcome.exhausted:
        return
    assert episode is not None  # only an episode still firing escalates
    tried = [policy.action, *policy.escalate]
    await record_notification(
        conn,
        now=now,
        event=NotificationEvent.ESCALATION_EXHAUSTED,
        policy_name=policy.name,
        target=episode.target,
        action_id=outcome.action_id,
        reason=f"policy {policy.name} still fires for {episode.target} after"
        f" {', '.join(tried)}; nothing is left to try",
        details={"episode": episode.phase.episode, "tried": tried},
        severity=policy.severity,
        tags=episode.tags,
        episode=episode.phase.episode,
    )


def _pair(row: Any) -> tuple[str, str]:
    return (row.policy_name, row.target)


def _extended(
    completed: datetime,
    deadline: datetime,
    outages: Mapping[str, tuple[datetime, datetime]] | None,
    policy: str,
) -> datetime:
    """The deadline, longer by an outage of the policy's condition that began before it
    and ended after the action completed."""
    outage = None if outages is None else outages.get(policy)
    if outage is None:
        return deadline
    start, end = outage
    if start <= deadline and end > completed:
        return deadline + (end - max(start, completed))
    return deadline


def _resolved(episode: Episode | None, number: int, deadline: datetime) -> bool:
    """Whether episode ``number`` of the pair resolved by ``deadline``."""
    if episode is None:
        return False
    phase = episode.phase
    if phase.episode > number:
        return True  # a later episode began, so this one ended
    return (
        phase.episode == number
        and phase.phase in (Phase.RESOLVED, Phase.OK)
        and phase.resolved_at is not None
        and phase.resolved_at <= deadline
    )


async def _record(
    conn: AsyncConnection, *, row: Any, result: str, within: float, now: datetime, actor: Actor
) -> bool:
    """Record the verdict on the action (if no other runner did meanwhile)."""
    verification = {"result": result, "at": now.isoformat(), "within_seconds": within}
    updated = await conn.execute(
        actions.update()
        .where(actions.c.id == row.id, actions.c.verification.is_(None))
        .values(verification=verification, updated_at=now)
    )
    if not updated.rowcount:
        return False
    reason = {
        "verified": f"verification: verified (the policy resolved within {within:g}s)",
        "failed": f"verification: failed (the policy did not resolve within {within:g}s)",
        "inconclusive": "verification: inconclusive (the episode ended because its alert went"
        " stale, not because it resolved: whether the action worked is not known)",
    }[result]
    await conn.execute(
        action_history.insert().values(
            action_id=row.id,
            from_status=row.status,
            to_status=row.status,
            at=now,
            reason=reason,
            attempt=row.attempts,
            actor=actor.name,
        )
    )
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind=f"action.verification_{result}",
        subject=f"action:{row.id}",
        after=verification,
    )
    return True


async def _escalate(
    conn: AsyncConnection,
    *,
    policy: PolicySpec,
    episode: Episode,
    step: int,
    outcome: Verified,
    now: datetime,
    paused: bool,
    silenced: Any,
    actor: Actor,
) -> Verified:
    """The next action of the escalation list for the pair, or the episode marked escalated."""
    if step >= len(policy.escalate):
        episode.escalated_at = now
        await episodes.save(conn, episodes=[episode], now=now)
        return replace(outcome, exhausted=True)  # told once the verdict is recorded
    action = policy.escalate[step]
    target = episode.target
    key = (policy_key(policy.name), target)
    opened = (await pair_states(conn, pairs=[key])).get(key, PairActions())
    guards = Guards(
        enabled=policy.enabled,
        auto_remediate=policy.auto_remediate,
        shadow=policy.shadow,
        open_action=opened.open_action_id is not None,
        silenced=bool(silenced(policy.name, target, episode.tags or {})),
        paused=paused,
    )
    decided = core.decide(episode.state, Verdict.TRUE, guards, now, trigger=Trigger.ESCALATION)
    guard: Guard | None = None
    if decided.decision is not None and decided.decision.acts and is_limited(policy):
        # Only an escalation every other guard lets through is counted against the limits.
        guard, limits = (await locked_limits(conn, policies=[policy], now=now))[policy.name]
        guards = replace(guards, limits=limits)
        decided = core.decide(episode.state, Verdict.TRUE, guards, now, trigger=Trigger.ESCALATION)
    decision = decided.decision
    assert decision is not None
    record = None
    if decision.acts:
        try:
            record = await create_action(
                conn,
                now=now,
                actor=actor,
                dedup_key=policy_key(policy.name),
                policy_name=policy.name,
                target=target,
                action=action,
                params=dict(policy.params),
                severity=policy.severity,
                details=f"escalation {step + 1} of {policy.name}: {action}",
                reason=f"escalated: verification of the previous action failed ({action})",
                episode=episode.phase.episode,
                escalation_step=step + 1,
                tags=episode.tags,
                **approval_fields(policy, now),
            )
        except ActionAlreadyOpen:
            decision = core.Decision(
                Suppressed.ALREADY_OPEN, repeat=episode.reason == Suppressed.ALREADY_OPEN.value
            )
    elif decision.reason is Suppressed.CIRCUIT_OPEN and guard is not None:
        await breaker_opened(
            conn,
            guard=guard,
            policy=policy,
            target=target,
            limits=guards.limits,
            now=now,
            tags=episode.tags,
            episode=episode.phase.episode,
        )
    reason = decision.reason
    if decision.repeat:
        if episode.decision_id is not None:
            await episodes.count_again(conn, ids=[episode.decision_id], now=now)
        return replace(outcome, suppressed=reason, decided=True, held=decision.held)
    [decision_id] = await episodes.add_decisions(
        conn,
        items=[
            NewDecision(
                policy_name=policy.name,
                target=target,
                severity=policy.severity,
                episode=episode.phase.episode,
                value=None,
                outcome=decision.outcome,
                reason=None if reason is None else reason.value,
                action_id=None if record is None else record.id,
            )
        ],
        now=now,
    )
    episode.decision_id = decision_id
    if record is not None:
        episode.action_id = record.id
        episode.reason = None
        if record.status == Status.AWAITING_APPROVAL.value:
            await approval_waiting(conn, record=record, now=now)
    else:
        assert reason is not None
        episode.reason = reason.value
    await episodes.save(conn, episodes=[episode], now=now)
    return replace(outcome, escalation=record, suppressed=reason, decided=True, held=decision.held)
