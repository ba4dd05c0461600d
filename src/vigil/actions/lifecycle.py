"""An action's life after it is recorded: claimed by a worker, finished, retried, reclaimed.

Each function is one compare-and-set inside the caller's transaction, recorded in the
action's history (docs/design.md invariant 5). Attempts only grow (invariant 7): ``next_attempt``
is what the next dispatch runs -- ``attempts + 1`` after a failure, ``attempts`` again after
a reclaim, whose try the remediator may already have made and will answer from its record.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.status import Status
from vigil.actions.store import Action, about, transition
from vigil.db.tables import action_history, actions
from vigil.errors import ActionAlreadyOpen, IllegalTransition, NotFound, StaleAttempt
from vigil.notify.events import NotificationEvent
from vigil.notify.store import record_notification
from vigil.observability.audit import Actor


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What the queue needs to (re)deliver an action: its id, attempt and target."""

    action_id: int
    attempt: int
    target: str


async def claim(
    conn: AsyncConnection,
    *,
    action_id: int,
    attempt: int,
    owner: str,
    now: datetime,
    lease_seconds: float,
) -> Action | None:
    """pending → running for ``attempt``, held by ``owner`` until the lease expires.

    ``None`` when the task is stale or a duplicate: the action is gone, not pending, or
    waiting for another attempt. Two workers holding copies of one task cannot both win.
    """
    try:
        return await transition(
            conn,
            action_id=action_id,
            to=Status.RUNNING,
            now=now,
            actor=Actor(owner),
            reason=f"attempt {attempt} started by {owner}",
            expect={"next_attempt": attempt},
            attempts=attempt,
            started_at=now,
            next_attempt_at=None,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
        )
    except (NotFound, IllegalTransition, StaleAttempt):
        return None


async def times_claimed(conn: AsyncConnection, *, action_id: int, attempt: int) -> int:
    """How many times ``attempt`` of the action was claimed (pending → running), from its
    history. More than once means a re-run (a reclaim): an earlier holder may have sent
    that attempt to the remediator, so it may be running there already."""
    count = await conn.execute(
        select(func.count())
        .select_from(action_history)
        .where(
            action_history.c.action_id == action_id,
            action_history.c.attempt == attempt,
            action_history.c.to_status == Status.RUNNING.value,
        )
    )
    return int(count.scalar_one())


async def renew_lease(
    conn: AsyncConnection,
    *,
    action_id: int,
    attempt: int,
    owner: str,
    now: datetime,
    lease_seconds: float,
) -> bool:
    """Extend ``owner``'s lease; ``False`` if it no longer holds the action."""
    result = await conn.execute(
        update(actions)
        .where(
            actions.c.id == action_id,
            actions.c.status == Status.RUNNING.value,
            actions.c.attempts == attempt,
            actions.c.lease_owner == owner,
        )
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)


async def _settle(
    conn: AsyncConnection,
    *,
    action_id: int,
    attempt: int,
    owner: str,
    now: datetime,
    to: Status,
    reason: str,
    **fields: Any,
) -> Action:
    """Move a running action its worker holds to ``to``, releasing the lease.
    :class:`StaleAttempt` if ``owner`` no longer holds it for ``attempt``."""
    return await transition(
        conn,
        action_id=action_id,
        to=to,
        now=now,
        actor=Actor(owner),
        reason=reason,
        expect={"attempts": attempt, "lease_owner": owner},
        lease_owner=None,
        lease_expires_at=None,
        **fields,
    )


async def complete(
    conn: AsyncConnection,
    *,
    action_id: int,
    attempt: int,
    owner: str,
    now: datetime,
    result: dict[str, Any],
    message: str,
    wanted: Collection[NotificationEvent] = frozenset(),
) -> Action:
    """running → completed with the remediator's answer, with an ``action_completed``
    notification when ``wanted`` (the events the notifications file routes) holds it."""
    record = await _settle(
        conn,
        action_id=action_id,
        attempt=attempt,
        owner=owner,
        now=now,
        to=Status.COMPLETED,
        reason=f"attempt {attempt} succeeded: {message}",
        result=result,
        error_message=None,
    )
    if NotificationEvent.ACTION_COMPLETED in wanted:
        await record_notification(
            conn,
            now=now,
            event=NotificationEvent.ACTION_COMPLETED,
            reason=f"{record.action} on {record.target} succeeded at attempt {attempt}: {message}",
            details={"action": record.action, "attempt": attempt, "message": message},
            **about(record),
        )
    return record


async def fail(
    conn: AsyncConnection,
    *,
    action_id: int,
    attempt: int,
    owner: str,
    now: datetime,
    error: str,
    result: dict[str, Any] | None,
) -> Action:
    """running → failed for good, with an ``action_failed`` notification."""
    record = await _settle(
        conn,
        action_id=action_id,
        attempt=attempt,
        owner=owner,
        now=now,
        to=Status.FAILED,
        reason=f"attempt {attempt} failed: {error}",
        result=result,
        error_message=error,
    )
    await record_notification(
        conn,
        now=now,
        event=NotificationEvent.ACTION_FAILED,
        reason=f"{record.action} on {record.target} failed at attempt {attempt}: {error}",
        details={"action": record.action, "attempt": attempt, "error": error},
        **about(record),
    )
    return record


async def retry_later(
    conn: AsyncConnection,
    *,
    action_id: int,
    attempt: int,
    owner: str,
    now: datetime,
    error: str,
    result: dict[str, Any] | None,
    due: datetime,
) -> Action:
    """running → pending, to run attempt + 1 at ``due``; the history keeps the error."""
    return await _settle(
        conn,
        action_id=action_id,
        attempt=attempt,
        owner=owner,
        now=now,
        to=Status.PENDING,
        reason=f"attempt {attempt} failed, retrying at {due.isoformat()}: {error}",
        result=result,
        error_message=error,
        next_attempt=attempt + 1,
        next_attempt_at=due,
        dispatched_at=due,
    )


async def record_late_result(
    conn: AsyncConnection, *, action_id: int, attempt: int, owner: str, now: datetime, outcome: str
) -> None:
    """A result for an action that moved on (cancelled, reclaimed): history only, no change."""
    row = (
        await conn.execute(select(actions.c.status).where(actions.c.id == action_id))
    ).one_or_none()
    if row is None:
        return
    await conn.execute(
        action_history.insert().values(
            action_id=action_id,
            from_status=row.status,
            to_status=row.status,
            at=now,
            reason=f"late result of attempt {attempt} ignored (action is {row.status}): {outcome}",
            attempt=attempt,
            actor=owner,
        )
    )


async def fail_pending(
    conn: AsyncConnection, *, action_id: int, attempt: int, actor: Actor, now: datetime, error: str
) -> Action | None:
    """pending → failed without running (a task delivered too often), with an
    ``action_dead_lettered`` notification; ``None`` if not pending."""
    try:
        record = await transition(
            conn,
            action_id=action_id,
            to=Status.FAILED,
            now=now,
            actor=actor,
            reason=f"attempt {attempt} not run: {error}",
            expect={"next_attempt": attempt},
            error_message=error,
        )
    except (NotFound, IllegalTransition, StaleAttempt):
        return None
    await record_notification(
        conn,
        now=now,
        event=NotificationEvent.ACTION_DEAD_LETTERED,
        reason=f"{record.action} on {record.target} dead-lettered: {error}",
        details={"action": record.action, "attempt": attempt, "error": error},
        **about(record),
    )
    return record


async def stale_dispatches(
    conn: AsyncConnection, *, now: datetime, older_than: datetime, limit: int
) -> list[Dispatch]:
    """Pending actions that are due and whose last dispatch is older than ``older_than``, each
    marked dispatched now (so one reconciler pass re-sends each once)."""
    rows = (
        await conn.execute(
            select(actions.c.id, actions.c.next_attempt, actions.c.target, actions.c.dispatched_at)
            .where(
                actions.c.status == Status.PENDING.value,
                or_(actions.c.next_attempt_at.is_(None), actions.c.next_attempt_at <= now),
                or_(actions.c.dispatched_at.is_(None), actions.c.dispatched_at <= older_than),
            )
            .order_by(actions.c.id)
            .limit(limit)
        )
    ).all()
    found = []
    for row in rows:
        marked = await conn.execute(
            update(actions)
            .where(
                actions.c.id == row.id,
                actions.c.status == Status.PENDING.value,
                actions.c.next_attempt == row.next_attempt,
                actions.c.dispatched_at.is_(None)
                if row.dispatched_at is None
                else actions.c.dispatched_at == row.dispatched_at,
            )
            .values(dispatched_at=now)
        )
        if marked.rowcount:
            found.append(Dispatch(int(row.id), int(row.next_attempt), row.target))
    return found


async def reclaim_expired(
    conn: AsyncConnection, *, now: datetime, actor: Actor, limit: int
) -> list[Dispatch]:
    """running → pending for actions whose worker lease expired, keeping their attempt."""
    rows = (
        await conn.execute(
            select(
                actions.c.id,
                actions.c.attempts,
                actions.c.lease_owner,
                actions.c.lease_expires_at,
            )
            .where(
                actions.c.status == Status.RUNNING.value,
                # No lease at all: left running by a version of Vigil without workers.
                or_(actions.c.lease_expires_at < now, actions.c.lease_expires_at.is_(None)),
            )
            .order_by(actions.c.id)
            .limit(limit)
        )
    ).all()
    found = []
    for row in rows:
        try:
            record = await transition(
                conn,
                action_id=int(row.id),
                to=Status.PENDING,
                now=now,
                actor=actor,
                reason=f"lease of {row.lease_owner} expired; attempt {row.attempts} reclaimed",
                # The lease as read: a renewal committed since then wins.
                expect={
                    "attempts": row.attempts,
                    "lease_owner": row.lease_owner,
                    "lease_expires_at": row.lease_expires_at,
                },
                next_attempt=max(row.attempts, 1),
                next_attempt_at=None,
                dispatched_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        except (NotFound, IllegalTransition, StaleAttempt):
            continue
        found.append(Dispatch(record.id, record.next_attempt, record.target))
    return found


async def redrive(conn: AsyncConnection, *, action_id: int, actor: Actor, now: datetime) -> Action:
    """failed → pending with a fresh attempt budget; the attempt count carries on.

    Raises :class:`IllegalTransition` unless the action failed, and
    :class:`ActionAlreadyOpen` when another action is open for the same pair by now.
    """
    row = (
        await conn.execute(select(actions.c.attempts).where(actions.c.id == action_id))
    ).one_or_none()
    if row is None:
        raise NotFound(f"action {action_id} not found")
    try:
        async with conn.begin_nested():
            return await transition(
                conn,
                action_id=action_id,
                to=Status.PENDING,
                now=now,
                actor=actor,
                reason=f"re-driven from the dead letter by {actor.name}",
                attempt_floor=row.attempts,
                next_attempt=row.attempts + 1,
                next_attempt_at=None,
                dispatched_at=now,
                completed_at=None,
            )
    except IntegrityError as exc:
        raise ActionAlreadyOpen(
            f"action {action_id} cannot be re-driven: another action for its policy or "
            "action is open on the same target"
        ) from exc
