"""Actions awaiting approval: approved (to ``pending``, dispatched), rejected or expired
(to ``cancelled``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.status import Status
from vigil.actions.store import get_action, transition
from vigil.db.tables import actions
from vigil.errors import IllegalTransition
from vigil.observability.audit import Actor


def _awaiting(record: dict[str, Any]) -> None:
    if record["status"] != Status.AWAITING_APPROVAL.value:
        raise IllegalTransition(
            f"action {record['id']} is {record['status']}; only an action awaiting approval"
            " can be approved or rejected"
        )


async def approve(
    conn: AsyncConnection, *, action_id: int, now: datetime, actor: Actor, comment: str | None
) -> dict[str, Any]:
    """Approve an action awaiting approval: it becomes ``pending``, to be dispatched."""
    _awaiting(await get_action(conn, action_id=action_id))
    return await transition(
        conn,
        action_id=action_id,
        to=Status.PENDING,
        now=now,
        actor=actor,
        reason=f"approved by {actor.name}" + (f": {comment}" if comment else ""),
        expect={"status": Status.AWAITING_APPROVAL.value},
        dispatched_at=now,
        approval_expires_at=None,
    )


async def reject(
    conn: AsyncConnection, *, action_id: int, now: datetime, actor: Actor, comment: str | None
) -> dict[str, Any]:
    """Reject an action awaiting approval: it is ``cancelled``."""
    _awaiting(await get_action(conn, action_id=action_id))
    return await transition(
        conn,
        action_id=action_id,
        to=Status.CANCELLED,
        now=now,
        actor=actor,
        reason=f"rejected by {actor.name}" + (f": {comment}" if comment else ""),
        expect={"status": Status.AWAITING_APPROVAL.value},
        approval_expires_at=None,
    )


async def expire(conn: AsyncConnection, *, now: datetime, limit: int = 500) -> list[dict[str, Any]]:
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
