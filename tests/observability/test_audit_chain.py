"""The audit trail's hash chain: appends link up, tampering is found, on both databases."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection
from typer.testing import CliRunner

from vigil.cli import app as cli
from vigil.container import Container
from vigil.db.engine import Database, create_engine
from vigil.db.migrate import alembic_config, upgrade
from vigil.db.tables import audit
from vigil.observability.audit import Actor, append_audit, append_audits, verify_chain
from vigil.observability.chain import GENESIS
from vigil.settings import Settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KINDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(create_engine(Settings(database_url=database_url, db_pool_size=8)))
    yield db
    await db.dispose()


async def write(database: Database, count: int, kind: str = "test.thing") -> None:
    for i in range(count):
        async with database.write() as conn:
            await append_audit(
                conn,
                at=NOW + timedelta(seconds=i),
                actor=Actor("alice", f"req-{i}"),
                kind=kind,
                subject=f"thing:{i}",
                before={"n": i, "big": 1e16, "nested": [1, {"b": 2.5, "a": None}]},
                after={"n": i + 1, "text": "héllo"},
            )


async def check(database: Database) -> tuple[int, Any]:
    async with database.read() as conn:
        return await verify_chain(conn)


async def ids(database: Database) -> list[int]:
    async with database.read() as conn:
        return list((await conn.execute(select(audit.c.id).order_by(audit.c.id))).scalars())


async def test_appends_form_one_chain(database: Database) -> None:
    await write(database, 5)
    async with database.write() as conn:
        await append_audits(
            conn,
            at=NOW,
            actor=Actor(),
            entries=[("bulk", f"x:{i}", None, {"i": i}) for i in range(3)],
        )
    assert await check(database) == (8, None)
    async with database.read() as conn:
        rows = (await conn.execute(select(audit).order_by(audit.c.id))).all()
    assert rows[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash


async def test_rows_holding_datetimes_verify(database: Database) -> None:
    """An action's audit row holds its timestamps: they hash as the JSON column stores them."""
    async with database.write() as conn:
        await append_audit(
            conn,
            at=NOW,
            actor=Actor(),
            kind="action.created",
            subject="action:1",
            after={"created_at": NOW, "completed_at": None, "at": [NOW + timedelta(hours=1)]},
        )
    assert await check(database) == (1, None)


async def test_an_altered_row_is_found(database: Database) -> None:
    await write(database, 4)
    third = (await ids(database))[2]
    async with database.write() as conn:
        await conn.execute(update(audit).where(audit.c.id == third).values(actor="mallory"))
    checked, broken = await check(database)
    assert checked == 2
    assert broken.id == third
    assert "altered" in broken.reason


async def test_a_removed_row_is_found(database: Database) -> None:
    await write(database, 4)
    second, third = (await ids(database))[1:3]
    async with database.write() as conn:
        await conn.execute(delete(audit).where(audit.c.id == second))
    checked, broken = await check(database)
    assert (checked, broken.id) == (1, third)
    assert "removed or reordered" in broken.reason


async def test_reordered_rows_are_found(database: Database) -> None:
    await write(database, 3)
    first, second, _ = await ids(database)
    async with database.write() as conn:
        rows = {
            r.id: dict(r._mapping)
            for r in await conn.execute(select(audit).where(audit.c.id.in_([first, second])))
        }
        # Swap the two rows' contents: each keeps its id, so the order of events changes.
        for a, b in ((first, second), (second, first)):
            values = {k: v for k, v in rows[b].items() if k != "id"}
            await conn.execute(update(audit).where(audit.c.id == a).values(**values))
    checked, broken = await check(database)
    assert (checked, broken.id) == (0, first)


async def test_removing_the_last_rows_is_found(database: Database) -> None:
    await write(database, 3)
    last = (await ids(database))[-1]
    async with database.write() as conn:
        await conn.execute(delete(audit).where(audit.c.id == last))
    checked, broken = await check(database)
    assert (checked, broken.id) == (2, None)
    assert "ends early" in broken.reason


async def test_concurrent_appends_never_fork_the_chain(database: Database) -> None:
    async def writer(n: int) -> None:
        for i in range(10):
            async with database.write() as conn:
                await append_audit(
                    conn, at=NOW, actor=Actor(f"w{n}"), kind="race", subject=f"{n}:{i}"
                )

    await asyncio.gather(*(writer(n) for n in range(6)))
    assert await check(database) == (60, None)


@KINDS
async def test_rows_written_before_the_chain_are_chained_by_the_migration(
    empty_database_url: str,
) -> None:
    database = Database(create_engine(Settings(database_url=empty_database_url), pooled=False))
    try:

        def to_0006(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0006")

        async with database.engine.connect() as conn:
            await conn.execution_options(vigil_write=True)
            await conn.run_sync(to_0006)
            for i in range(3):
                await conn.execute(
                    audit.insert().values(
                        at=NOW, actor="old", kind="legacy", subject=f"s{i}", after={"i": i}
                    )
                )
            await conn.commit()
        await upgrade(database)
        assert await check(database) == (3, None)
        await write(database, 2)  # new rows continue the chain
        assert await check(database) == (5, None)
    finally:
        await database.dispose()


def test_cli_verify_says_intact_or_names_the_break(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(create_engine(Settings(database_url=database_url), pooled=False))
    asyncio.run(write(database, 3))
    monkeypatch.setenv("DATABASE_URL", database_url)
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "audit chain intact: 3 rows" in result.output

    async def tamper() -> int:
        second = (await ids(database))[1]
        async with database.write() as conn:
            await conn.execute(update(audit).where(audit.c.id == second).values(kind="edited"))
        await database.dispose()
        return second

    second = asyncio.run(tamper())
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert f"audit chain BROKEN at row {second}" in result.output


async def test_audit_route_lists_filters_and_pages(
    client: httpx.AsyncClient, container: Container
) -> None:
    for name in ("a", "b", "c"):
        body = {
            "name": name,
            "condition": {"type": "metric_exceeds", "metric": "m", "threshold": 1},
            "action": "custom",
        }
        assert (await client.post("/api/v1/policies", json=body)).status_code == 201
    response = await client.get(
        "/api/v1/audit", params={"kind": "policy.created", "limit": 2, "page": 1}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["count"], body["page_size"]) == (2, 2)
    assert body["total"] >= 3
    newest = body["entries"][0]
    assert newest["subject"] == "policy:c"
    assert newest["actor"] == "anonymous"
    assert len(newest["hash"]) == 64
    assert len(newest["prev_hash"]) == 64
    for bad in ({"limit": 0}, {"page": 0}, {"start_time": "yesterday"}):
        assert (await client.get("/api/v1/audit", params=bad)).status_code == 422
    async with container.database.read() as conn:
        assert (await verify_chain(conn))[1] is None
