"""Silences in the database: created, listed and expired, each change audited."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.tables import silences
from vigil.decide.silence_rules import SilenceRule
from vigil.errors import NotFound
from vigil.observability.audit import Actor, append_audit


async def create_silence(
    conn: AsyncConnection,
    *,
    matchers: dict[str, Any],
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
    actor: Actor,
    now: datetime,
) -> dict[str, Any]:
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
    record = dict(row._mapping)
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="silence.created",
        subject=f"silence:{record['id']}",
        after=silence_out(record, now),
    )
    return record


async def list_silences(
    conn: AsyncConnection, *, now: datetime, active: bool | None = None
) -> list[dict[str, Any]]:
    """Silences, newest first; ``active=True`` only those in force now."""
    query = select(silences).order_by(silences.c.id.desc())
    if active is True:
        query = query.where(silences.c.starts_at <= now, silences.c.ends_at > now)
    elif active is False:
        query = query.where((silences.c.starts_at > now) | (silences.c.ends_at <= now))
    return [dict(r._mapping) for r in await conn.execute(query)]


async def expire_silence(
    conn: AsyncConnection, *, silence_id: int, actor: Actor, now: datetime
) -> dict[str, Any]:
    """End a silence now (one not yet started never starts). :class:`NotFound` if unknown."""
    row = (await conn.execute(select(silences).where(silences.c.id == silence_id))).one_or_none()
    if row is None:
        raise NotFound(f"silence {silence_id} not found")
    before = dict(row._mapping)
    if before["ends_at"] <= now:
        return before  # already over
    ends_at = max(now, before["starts_at"])
    await conn.execute(update(silences).where(silences.c.id == silence_id).values(ends_at=ends_at))
    after = {**before, "ends_at": ends_at}
    await append_audit(
        conn,
        at=now,
        actor=actor,
        kind="silence.expired",
        subject=f"silence:{silence_id}",
        before=silence_out(before, now),
        after=silence_out(after, now),
    )
    return after


async def active_rules(conn: AsyncConnection, *, now: datetime) -> list[SilenceRule]:
    """The silences in force now, as the guard reads them."""
    return [_rule(r) for r in await list_silences(conn, now=now, active=True)]


def _rule(record: Mapping[str, Any]) -> SilenceRule:
    matchers = record["matchers"]
    return SilenceRule(
        id=int(record["id"]),
        starts_at=record["starts_at"],
        ends_at=record["ends_at"],
        policy=matchers.get("policy"),
        target=matchers.get("target"),
        tags=matchers.get("tags") or {},
    )


def silence_out(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A silence as the API shows it."""
    return {
        "id": record["id"],
        "matchers": record["matchers"],
        "starts_at": record["starts_at"],
        "ends_at": record["ends_at"],
        "comment": record["comment"],
        "created_by": record["created_by"],
        "active": record["starts_at"] <= now < record["ends_at"],
    }


async def rules_between(
    conn: AsyncConnection, *, start: datetime, end: datetime
) -> list[SilenceRule]:
    """Every silence in force at some moment between ``start`` and ``end`` (a backtest
    replays them as they were)."""
    rows = await conn.execute(
        select(silences).where(silences.c.starts_at < end, silences.c.ends_at > start)
    )
    return [_rule(dict(r._mapping)) for r in rows]
