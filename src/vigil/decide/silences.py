"""Silences in the database: created, listed and expired, each change audited."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.engine import Database
from vigil.db.records import record_of
from vigil.db.tables import silences
from vigil.decide.silence_rules import SilenceRule
from vigil.errors import InvalidInput, NotFound
from vigil.observability.audit import Actor, append_audit


@dataclass(frozen=True, slots=True)
class Silence:
    """A stored silence: violations matching ``matchers`` are suppressed while
    ``starts_at <= now < ends_at``."""

    id: int
    matchers: dict[str, Any]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime

    def active_at(self, now: datetime) -> bool:
        """Whether the silence is in force at ``now``."""
        return self.starts_at <= now < self.ends_at


def _silence(row: Row[Any]) -> Silence:
    """The :class:`Silence` of a ``silences`` row."""
    return record_of(Silence, row)


def silence_view(silence: Silence, now: datetime) -> dict[str, Any]:
    """A silence as the API shows it and an audit row keeps it (``active``: in force at
    ``now``)."""
    return {
        "id": silence.id,
        "matchers": silence.matchers,
        "starts_at": silence.starts_at,
        "ends_at": silence.ends_at,
        "comment": silence.comment,
        "created_by": silence.created_by,
        "active": silence.active_at(now),
    }


async def create_silence(
    conn: AsyncConnection,
    *,
    matchers: dict[str, Any],
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    actor: Actor,
    now: datetime,
) -> Silence:
    """Record a silence (audited)."""
    row = (
        await conn.execute(
            silences.insert()
            .values(
                matchers=matchers,
                starts_at=starts_at,
                ends_at=ends_at,
                comment=comment,
                created_by=actor.name,
                created_at=now,
            )
            .returning(silences)
        )
    ).one()
    record = _silence(row)
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="silence.created",
        subject=f"silence:{record.id}",
        after=silence_view(record, now),
    )
    return record


async def add_silence(
    database: Database,
    *,
    matchers: dict[str, Any],
    starts_at: datetime | None,
    ends_at: datetime,
    comment: str,
    actor: Actor,
    now: datetime,
) -> Silence:
    """Make a silence from ``starts_at`` (default ``now``) to ``ends_at``, in a transaction
    of its own: what ``POST /api/v1/silences`` and Slack's **Silence 1h** button do.

    :class:`InvalidInput` when it would end before it starts or before ``now``."""
    starts_at = starts_at or now
    if ends_at <= max(starts_at, now):
        message = "must be later than starts_at and than now"
        raise InvalidInput(
            message, detail=[{"loc": ["body", "ends_at"], "msg": message, "type": "value_error"}]
        )
    async with database.write() as conn:
        return await create_silence(
            conn,
            matchers=matchers,
            starts_at=starts_at,
            ends_at=ends_at,
            comment=comment,
            actor=actor,
            now=now,
        )


async def list_silences(
    conn: AsyncConnection, *, now: datetime, active: bool | None = None
) -> list[Silence]:
    """Silences, newest first; ``active=True`` only those in force now."""
    query = select(silences).order_by(silences.c.id.desc())
    if active is True:
        query = query.where(silences.c.starts_at <= now, silences.c.ends_at > now)
    elif active is False:
        query = query.where((silences.c.starts_at > now) | (silences.c.ends_at <= now))
    return [_silence(r) for r in await conn.execute(query)]


async def expire_silence(
    conn: AsyncConnection, *, silence_id: int, actor: Actor, now: datetime
) -> Silence:
    """End a silence now (one not yet started never starts). :class:`NotFound` if unknown."""
    row = (await conn.execute(select(silences).where(silences.c.id == silence_id))).one_or_none()
    if row is None:
        raise NotFound(f"silence {silence_id} not found")
    before = _silence(row)
    if before.ends_at <= now:
        return before  # already over
    ends_at = max(now, before.starts_at)
    await conn.execute(update(silences).where(silences.c.id == silence_id).values(ends_at=ends_at))
    after = replace(before, ends_at=ends_at)
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="silence.expired",
        subject=f"silence:{silence_id}",
        before=silence_view(before, now),
        after=silence_view(after, now),
    )
    return after


async def active_rules(conn: AsyncConnection, *, now: datetime) -> list[SilenceRule]:
    """The silences in force now, as the guard reads them."""
    return [_rule(r) for r in await list_silences(conn, now=now, active=True)]


def _rule(silence: Silence) -> SilenceRule:
    matchers = silence.matchers
    return SilenceRule(
        id=silence.id,
        starts_at=silence.starts_at,
        ends_at=silence.ends_at,
        policy=matchers.get("policy"),
        target=matchers.get("target"),
        tags=matchers.get("tags") or {},
    )


async def rules_between(
    conn: AsyncConnection, *, start: datetime, end: datetime
) -> list[SilenceRule]:
    """Every silence in force at some moment between ``start`` and ``end`` (a backtest
    replays them as they were)."""
    rows = await conn.execute(
        select(silences).where(silences.c.starts_at < end, silences.c.ends_at > start)
    )
    return [_rule(_silence(r)) for r in rows]
