"""Migrations: upgrade from empty on both databases, matching the tables the code uses."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection

from vigil.actions import store
from vigil.container import build_container
from vigil.db.engine import Database, create_engine
from vigil.db.migrate import alembic_config, current_revision, head_revision, upgrade
from vigil.db.tables import actions, metadata, policies
from vigil.settings import Settings

KINDS = pytest.mark.parametrize("empty_database_url", ["sqlite", "postgresql"], indirect=True)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


@KINDS
async def test_upgrade_from_empty_creates_the_schema_the_code_uses(empty_database_url: str) -> None:
    database = Database(create_engine(Settings(database_url=empty_database_url), pooled=False))
    try:
        assert await current_revision(database) is None
        await upgrade(database)
        assert await current_revision(database) == head_revision()
        async with database.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert {
                "metrics",
                "metric_latest",
                "policies",
                "actions",
                "action_history",
                "audit",
            } <= tables
            assert await conn.run_sync(_diff) == []
        await upgrade(database)  # a second run is a no-op
        assert await current_revision(database) == head_revision()
    finally:
        await database.dispose()


@KINDS
async def test_replicas_starting_together_migrate_and_load_policies_once(
    empty_database_url: str,
) -> None:
    containers = [
        build_container(Settings(database_url=empty_database_url, runner_enabled=False))
        for _ in range(3)
    ]
    try:
        await asyncio.gather(*(c.start(run_runner=False) for c in containers))
        async with containers[0].database.read() as conn:
            names = sorted((await conn.execute(select(policies.c.name))).scalars())
        assert names == sorted(
            [
                "high-cpu-alert",
                "high-memory-alert",
                "low-disk-space",
                "service-health-critical",
                "resource-exhaustion",
                "pod-drain-required",
            ]
        )
    finally:
        for c in containers:
            await c.stop()


@KINDS
def test_db_upgrade_command_in_two_processes_at_once(empty_database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    command = [sys.executable, "-m", "vigil", "db", "upgrade"]
    procs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"database is at revision {head_revision()}" in out


def _migrate(connection: Connection, revision: str, *, down: bool = False) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    (command.downgrade if down else command.upgrade)(config, revision)


async def _to(database: Database, revision: str, *, down: bool = False) -> None:
    async with database.engine.connect() as conn:
        await conn.execution_options(vigil_write=True)
        await conn.run_sync(_migrate, revision, down=down)
        await conn.commit()


@KINDS
async def test_actions_recorded_before_tags_were_kept_read_without_tags(
    empty_database_url: str,
) -> None:
    database = Database(create_engine(Settings(database_url=empty_database_url), pooled=False))
    now = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        await _to(database, "0010")
        async with database.engine.connect() as conn:
            await conn.execute(
                actions.insert().values(
                    dedup_key="manual:restart",
                    target="web-01",
                    action="restart",
                    params={},
                    status="pending",
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.commit()
        await upgrade(database)
        async with database.read() as conn:
            [record] = (await store.list_actions(conn, page=1, limit=10))[0]
        assert record.tags is None
        await _to(database, "0010", down=True)  # and back
        assert await current_revision(database) == "0010"
    finally:
        await database.dispose()
