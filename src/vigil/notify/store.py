"""Notifications in the database: recorded with what caused them, listed, and the sender's
claims and outcomes.

:func:`record_notification` runs inside the caller's transaction, so a notification commits
with the change it tells about, or not at all. Data-access functions are keyword-only with
the connection first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.paging import newest_first
from vigil.db.records import record_of
from vigil.db.tables import notification_marks, notifications
from vigil.db.upsert import insert_into
from vigil.notify.events import DeliveryStatus, NotificationEvent

RECORDED = "vigil.notification_recorded"
"""Set in a connection's ``info`` when a notification was recorded on it, so a sender in
this process can be woken when the transaction commits (see :mod:`vigil.notify.sender`)."""


@dataclass(frozen=True, slots=True)
class Notification:
    """A stored notification: one row of ``notifications``, with its delivery state.

    ``event`` and ``delivery_status`` are kept as stored text, so a row written by a newer
    Vigil can still be read and listed.
    """

    id: int
    at: datetime
    event: str
    policy_name: str | None
    target: str | None
    action_id: int | None
    reason: str
    details: dict[str, Any] | None
    severity: str | None
    tags: dict[str, str] | None
    episode: int | None
    delivery_status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    deliveries: dict[str, Any] | None
    """Each channel's own delivery state, keyed by the channel's name."""


def _notification(row: Row[Any]) -> Notification:
    """The :class:`Notification` of a ``notifications`` row."""
    return record_of(Notification, row)


async def record_notification(
    conn: AsyncConnection,
    *,
    now: datetime,
    event: NotificationEvent,
    policy_name: str | None = None,
    target: str | None = None,
    action_id: int | None = None,
    reason: str,
    details: dict[str, Any] | None = None,
    severity: str | None = None,
    tags: dict[str, str] | None = None,
    episode: int | None = None,
) -> int:
    """Record a notification in the caller's transaction, due for sending at once; its id."""
    notification_id = (
        await conn.execute(
            notifications.insert()
            .values(
                at=now,
                event=NotificationEvent(event).value,
                policy_name=policy_name,
                target=target,
                action_id=action_id,
                reason=reason,
                details=details,
                severity=severity,
                tags=tags or None,
                episode=episode,
                delivery_status=DeliveryStatus.PENDING.value,
                attempts=0,
                next_attempt_at=now,
            )
            .returning(notifications.c.id)
        )
    ).scalar_one()
    conn.info[RECORDED] = True
    return int(notification_id)


async def list_notifications(
    conn: AsyncConnection,
    *,
    page: int,
    limit: int,
    event: NotificationEvent | None = None,
    policy: str | None = None,
    target: str | None = None,
    delivery: DeliveryStatus | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> tuple[list[Notification], int]:
    """A page of notifications, newest first, and how many match in all."""
    conditions = []
    if event is not None:
        conditions.append(notifications.c.event == event.value)
    if policy is not None:
        conditions.append(notifications.c.policy_name == policy)
    if target is not None:
        conditions.append(notifications.c.target == target)
    if delivery is not None:
        conditions.append(notifications.c.delivery_status == delivery.value)
    if start_time is not None:
        conditions.append(notifications.c.at >= start_time)
    if end_time is not None:
        conditions.append(notifications.c.at <= end_time)
    rows, total = await newest_first(
        conn, notifications, conditions=conditions, page=page, limit=limit
    )
    return [_notification(r) for r in rows], total


async def get_notification(conn: AsyncConnection, *, notification_id: int) -> Notification | None:
    """One notification, or ``None``."""
    row = (
        await conn.execute(select(notifications).where(notifications.c.id == notification_id))
    ).one_or_none()
    return None if row is None else _notification(row)


# --- the sender's side ---------------------------------------------------------------------


async def claim_due(
    conn: AsyncConnection, *, now: datetime, until: datetime, limit: int
) -> list[Notification]:
    """Pending notifications due by ``now``, each claimed until ``until`` (its next try is
    pushed there), oldest first. One statement: the rows it picks are still due when it
    changes them (PostgreSQL skips rows another sender is claiming; SQLite has one writer
    at a time), so two senders cannot both claim one notification, and one whose sender
    died is due again at ``until``."""
    due = (
        select(notifications.c.id)
        .where(
            notifications.c.delivery_status == DeliveryStatus.PENDING.value,
            notifications.c.next_attempt_at <= now,
        )
        .order_by(notifications.c.next_attempt_at, notifications.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = await conn.execute(
        update(notifications)
        .where(
            notifications.c.id.in_(due.scalar_subquery()),
            notifications.c.delivery_status == DeliveryStatus.PENDING.value,
            notifications.c.next_attempt_at <= now,
        )
        .values(next_attempt_at=until)
        .returning(notifications)
    )
    return sorted((_notification(r) for r in rows), key=lambda record: record.id)


async def record_attempt(
    conn: AsyncConnection,
    *,
    notification_id: int,
    claimed_until: datetime,
    status: DeliveryStatus,
    attempts: int,
    next_attempt_at: datetime | None,
    last_error: str | None,
    delivered_at: datetime | None,
    deliveries: dict[str, Any] | None,
) -> bool:
    """Record a try's outcome if the claim taken until ``claimed_until`` still holds."""
    result = await conn.execute(
        update(notifications)
        .where(
            notifications.c.id == notification_id,
            notifications.c.delivery_status == DeliveryStatus.PENDING.value,
            notifications.c.next_attempt_at == claimed_until,
        )
        .values(
            delivery_status=status.value,
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            last_error=last_error,
            delivered_at=delivered_at,
            deliveries=deliveries,
        )
    )
    return bool(result.rowcount)


async def settle_unsendable(conn: AsyncConnection, *, now: datetime) -> list[str]:
    """Mark pending notifications due by ``now`` as ``none`` (no channel is configured);
    the event of each."""
    result = await conn.execute(
        update(notifications)
        .where(
            notifications.c.delivery_status == DeliveryStatus.PENDING.value,
            notifications.c.next_attempt_at <= now,
        )
        .values(delivery_status=DeliveryStatus.NONE.value, next_attempt_at=None)
        .returning(notifications.c.event)
    )
    return [str(event) for event in result.scalars()]


async def about_actions(conn: AsyncConnection, *, action_ids: set[int]) -> list[Notification]:
    """Every notification about one of ``action_ids`` that has a delivery record, oldest
    first: where the sender finds the first message about an action on each channel."""
    rows = await conn.execute(
        select(notifications)
        .where(
            notifications.c.action_id.in_(sorted(action_ids)),
            notifications.c.deliveries.is_not(None),
        )
        .order_by(notifications.c.id)
    )
    return [_notification(r) for r in rows]


async def pending_about(
    conn: AsyncConnection,
    *,
    episodes: set[tuple[str, str, int]],
    action_ids: set[int],
    before: int,
) -> list[Notification]:
    """Pending notifications recorded before ``before`` (an id) about one of ``episodes``
    (policy, target, number) or ``action_ids``: what a later message about the same episode
    or action must not overtake."""
    about = [
        and_(
            notifications.c.policy_name == policy,
            notifications.c.target == target,
            notifications.c.episode == number,
        )
        for policy, target, number in sorted(episodes)
    ]
    if action_ids:
        about.append(notifications.c.action_id.in_(sorted(action_ids)))
    if not about:
        return []
    rows = await conn.execute(
        select(notifications)
        .where(
            notifications.c.delivery_status == DeliveryStatus.PENDING.value,
            notifications.c.id < before,
            or_(*about),
        )
        .order_by(notifications.c.id)
    )
    return [_notification(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Mark:
    """What the sender remembers under one key: a route group's due time and last send, or
    when an event last went to a channel."""

    due_at: datetime | None = None
    sent_at: datetime | None = None


async def read_marks(conn: AsyncConnection, keys: set[str]) -> dict[str, Mark]:
    """The marks stored under ``keys`` (absent ones are left out). On PostgreSQL they stay
    locked, in key order, until the transaction ends: two senders changing the same marks
    take them in one order and never wait on each other in a circle."""
    if not keys:
        return {}
    query = (
        select(notification_marks)
        .where(notification_marks.c.key.in_(sorted(keys)))
        .order_by(notification_marks.c.key)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = await conn.execute(query)
    return {row.key: Mark(due_at=row.due_at, sent_at=row.sent_at) for row in rows}


async def write_marks(conn: AsyncConnection, marks: dict[str, Mark]) -> None:
    """Store ``marks``, each replacing what its key held."""
    if not marks:
        return
    for key, mark in sorted(marks.items()):
        statement = insert_into(conn, notification_marks).values(
            key=key, due_at=mark.due_at, sent_at=mark.sent_at
        )
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[notification_marks.c.key],
                set_={"due_at": mark.due_at, "sent_at": mark.sent_at},
            )
        )


async def start_group(
    conn: AsyncConnection, *, key: str, due_at: datetime, since: datetime
) -> datetime:
    """Set a route group's due time unless one is set already (from ``since`` on: an older
    one is a stale group's); the due time that holds. Run in the claim's transaction, so
    two senders starting one group agree on its time and send it once."""
    statement = insert_into(conn, notification_marks).values(key=key, due_at=due_at, sent_at=None)
    held = notification_marks.c.due_at
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[notification_marks.c.key],
            set_={"due_at": due_at},
            where=or_(held.is_(None), held < since),
        )
    )
    stored = (await conn.execute(select(held).where(notification_marks.c.key == key))).scalar_one()
    return stored if stored is not None else due_at


async def end_group(
    conn: AsyncConnection,
    *,
    key: str,
    due_at: datetime | None,
    sent_at: datetime | None,
    next_due: datetime | None,
) -> None:
    """After a group's message was tried at its due time ``due_at``: its last send
    (``sent_at``, when it went out) and its next due time (``next_due``: a retry, or none).
    A due time another sender set meanwhile (a newer group) is left alone."""
    values: dict[str, Any] = {}
    if sent_at is not None:
        values["sent_at"] = sent_at
    held = notification_marks.c.due_at
    await conn.execute(
        update(notification_marks)
        .where(notification_marks.c.key == key, held.is_not_distinct_from(due_at))
        .values(due_at=next_due, **values)
    )
    if values:
        await conn.execute(
            update(notification_marks)
            .where(notification_marks.c.key == key, held.is_distinct_from(due_at))
            .values(**values)
        )


async def prune_marks(conn: AsyncConnection, *, before: datetime) -> int:
    """Forget marks nothing waits for that last went out before ``before``; how many."""
    result = await conn.execute(
        notification_marks.delete().where(
            notification_marks.c.due_at.is_(None),
            or_(notification_marks.c.sent_at.is_(None), notification_marks.c.sent_at < before),
        )
    )
    return int(result.rowcount or 0)
