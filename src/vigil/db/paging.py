"""One page of a table's rows, newest first, and how many match in all: what every list
route (actions, decisions, notifications, audit) answers with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection


async def newest_first(
    conn: AsyncConnection,
    table: Table,
    *,
    conditions: Iterable[ColumnElement[bool]],
    page: int,
    limit: int,
) -> tuple[list[Any], int]:
    """Rows of ``table`` matching every condition, page ``page`` of ``limit`` by id
    descending, and the number of matching rows."""
    where = and_(True, *conditions)
    total = (await conn.execute(select(func.count()).select_from(table).where(where))).scalar_one()
    rows = await conn.execute(
        select(table)
        .where(where)
        .order_by(table.c.id.desc())
        .limit(limit)
        .offset((page - 1) * limit)
    )
    return list(rows), int(total)
