"""The ``alerts`` table: one row per alert episode (fingerprint, ``startsAt``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.alerts.schemas import AlertIn
from vigil.db.paging import newest_first
from vigil.db.records import record_of
from vigil.db.tables import alerts
from vigil.db.upsert import insert_into

FIRING = "firing"
RESOLVED = "resolved"
STALE = "stale"
STATUSES = (FIRING, RESOLVED, STALE)
"""A stored alert's status: Alertmanager's last word on it, or ``stale`` when it stopped
refreshing a firing alert for ``VIGIL_ALERT_STALE_SECONDS``."""


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """One stored alert episode."""

    id: int
    fingerprint: str
    starts_at: datetime
    status: str
    ends_at: datetime | None
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str | None
    target: str | None
    received_at: datetime
    last_seen_at: datetime


async def record_alert(
    conn: AsyncConnection, *, alert: AlertIn, target: str | None, now: datetime
) -> str | None:
    """Store ``alert`` (a new episode) or refresh its row; the status its row had before,
    None for a new one.

    An episode that ended (resolved, or stale) stays ended: a late or re-sent ``firing``
    notification of it only refreshes ``last_seen_at``.
    """
    starts = alert.starts
    # A firing alert's endsAt is only when its sender would take it as resolved unless
    # refreshed: the row's ends_at is when it did end.
    ends = alert.ends if alert.status == RESOLVED else None
    values = {
        "fingerprint": alert.fingerprint,
        "starts_at": starts,
        "alertname": alert.labels.get("alertname", "")[:1024],
        "status": alert.status,
        "ends_at": ends,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "generator_url": alert.generator_url or None,
        "target": target,
        "received_at": now,
        "last_seen_at": now,
    }
    inserted = await conn.execute(
        insert_into(conn, alerts)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["fingerprint", "starts_at"])
        .returning(alerts.c.id)
    )
    if inserted.first() is not None:
        return None
    key = (alerts.c.fingerprint == alert.fingerprint, alerts.c.starts_at == starts)
    query = select(alerts.c.status).where(*key)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    before: str = (await conn.execute(query)).scalar_one()
    changes: dict[str, Any] = {"last_seen_at": now, "annotations": dict(alert.annotations)}
    if before == FIRING or alert.status == RESOLVED:
        changes.update(status=alert.status, ends_at=ends)
    await conn.execute(update(alerts).where(*key).values(**changes))
    return before


async def firing_labels(
    conn: AsyncConnection, *, alertnames: Iterable[str]
) -> list[dict[str, str]]:
    """The labels of every firing alert named one of ``alertnames``."""
    wanted = sorted(set(alertnames))
    if not wanted:
        return []
    rows = await conn.execute(
        select(alerts.c.labels).where(alerts.c.status == FIRING, alerts.c.alertname.in_(wanted))
    )
    return [dict(labels) for (labels,) in rows]


async def mark_stale(conn: AsyncConnection, *, seen_before: datetime) -> list[StoredAlert]:
    """Mark every firing alert last refreshed before ``seen_before`` stale; those alerts."""
    query = (
        select(alerts)
        .where(alerts.c.status == FIRING, alerts.c.last_seen_at < seen_before)
        .order_by(alerts.c.fingerprint, alerts.c.starts_at)
    )
    if conn.dialect.name == "postgresql":
        # Row locks in the receiver's order (fingerprint, startsAt), before any target's.
        query = query.with_for_update()
    rows = await conn.execute(query)
    found = [record_of(StoredAlert, row) for row in rows]
    if found:
        await conn.execute(
            update(alerts).where(alerts.c.id.in_([a.id for a in found])).values(status=STALE)
        )
    return found


async def list_alerts(
    conn: AsyncConnection, *, status: str | None, page: int, limit: int
) -> tuple[list[StoredAlert], int]:
    """One page of stored alerts, newest first, and how many match."""
    conditions = [alerts.c.status == status] if status is not None else []
    rows, total = await newest_first(conn, alerts, conditions=conditions, page=page, limit=limit)
    return [record_of(StoredAlert, row) for row in rows], total


async def prune_alerts(conn: AsyncConnection, *, seen_before: datetime) -> int:
    """Delete alerts last heard of before ``seen_before``; how many."""
    result = await conn.execute(delete(alerts).where(alerts.c.last_seen_at < seen_before))
    return int(result.rowcount or 0)
