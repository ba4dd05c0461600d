"""Actions awaiting approval: approved (to ``pending``, dispatched), rejected or expired
(to ``cancelled``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.status import Status
from vigil.actions.store import Action, about, get_action, transition
from vigil.db.tables import actions
from vigil.errors import IllegalTransition
from vigil.notify.events import NotificationEvent
from vigil.notify.store import record_notification
from vigil.observability.audit import Actor
from vigil.policy.models import PolicySpec


async def approve(
    conn: AsyncConnection, *, action_id: int, now: datetime, actor: Actor, comment: str | None
) -> Action:
    """Approve an action awaiting approval: it becomes ``pending``, to be dispatched."""
    return await _answer(conn, action_id, Status.PENDING, "approved", now, actor, comment)


async def reject(
    conn: AsyncConnection, *, action_id: int, now: datetime, actor: Actor, comment: str | None
) -> Action:
    """Reject an action awaiting approval: it is ``cancelled``."""
    return await _answer(conn, action_id, Status.CANCELLED, "rejected", now, actor, comment)


async def _answer(
    conn: AsyncConnection,
    action_id: int,
    to: Status,
    verb: str,
    now: datetime,
    actor: Actor,
    comment: str | None,
) -> Action:
    record = await get_action(conn, action_id=action_id)
    if record.status != Status.AWAITING_APPROVAL.value:
        raise IllegalTransition(
            f"action {action_id} is {record.status}; only an action awaiting approval"
            " can be approved or rejected"
        )
    expires = record.approval_expires_at
    if to is Status.PENDING and expires is not None and expires <= now:
        raise IllegalTransition(
            f"action {action_id}'s approval timed out at {expires.isoformat()}; it is being"
            " cancelled"
        )
    fields: dict[str, Any] = {"approval_expires_at": None}
    if to is Status.PENDING:
        fields["dispatched_at"] = now  # the caller hands it to the queue
    return await transition(
        conn,
        action_id=action_id,
        to=to,
        now=now,
        actor=actor,
        reason=f"{verb} by {actor.name}" + (f": {comment}" if comment else ""),
        expect={"status": Status.AWAITING_APPROVAL.value},
        **fields,
    )


def approval_fields(policy: PolicySpec, now: datetime) -> dict[str, Any]:
    """How an action of ``policy`` is created: awaiting approval until its timeout, if the
    policy requires approval (else nothing to add)."""
    if not policy.approval_required:
        return {}
    return {
        "status": Status.AWAITING_APPROVAL,
        "approval_expires_at": now + timedelta(seconds=policy.approval_timeout_seconds),
    }


async def expire(conn: AsyncConnection, *, now: datetime, limit: int = 500) -> list[Action]:
    """Cancel actions whose approval timed out; the cancelled ones."""
    rows = await conn.execute(
        select(actions.c.id)
        .where(
            actions.c.status == Status.AWAITING_APPROVAL.value,
            actions.c.approval_expires_at <= now,
        )
        .order_by(actions.c.id)
        .limit(limit)
    )
    expired = []
    for (action_id,) in rows.all():
        try:
            expired.append(
                await transition(
                    conn,
                    action_id=action_id,
                    to=Status.CANCELLED,
                    now=now,
                    actor=Actor(),
                    reason="approval timed out",
                    expect={"status": Status.AWAITING_APPROVAL.value},
                    approval_expires_at=None,
                )
            )
        except IllegalTransition:
            continue  # approved or rejected meanwhile
    return expired


async def approval_waiting(conn: AsyncConnection, *, record: Action, now: datetime) -> None:
    """A ``approval_waiting`` notification for an action created awaiting approval."""
    assert record.approval_expires_at is not None
    await record_notification(
        conn,
        now=now,
        event=NotificationEvent.APPROVAL_WAITING,
        reason=f"action {record.action} on {record.target} awaits approval until"
        f" {record.approval_expires_at.isoformat()}: POST /api/v1/actions/{record.id}"
        "/approve or /reject",
        details={"action": record.action, "params": record.params},
        **about(record),
    )
