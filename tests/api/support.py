"""Helpers for the policy and action API tests: audit rows, table counts, timestamps."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from tests.conftest import CLIENT_HEADERS
from vigil.api.app import create_app
from vigil.clock import Clock
from vigil.container import Container, build_container
from vigil.db.tables import (
    action_history,
    actions,
    audit,
    decisions,
    metrics,
    policies,
    policy_guards,
    policy_states,
)
from vigil.settings import Settings

_ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_TIME_KEYS = re.compile(r"(^|_)(at|time|timestamp)$")


async def audit_rows(container: Container) -> list[dict[str, Any]]:
    """Every audit row, oldest first."""
    async with container.database.read() as conn:
        rows = await conn.execute(select(audit).order_by(audit.c.id))
        return [dict(r._mapping) for r in rows]


async def table_counts(container: Container) -> dict[str, int]:
    """Row counts of the tables a mutation can touch."""
    counts = {}
    async with container.database.read() as conn:
        for table in (
            metrics,
            policies,
            actions,
            action_history,
            audit,
            decisions,
            policy_states,
            policy_guards,
        ):
            counts[table.name] = int(
                (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            )
    return counts


def assert_utc_timestamps(payload: Any, path: str = "$") -> int:
    """Every timestamp field (``*_at``, ``at``, ``timestamp``) anywhere in ``payload`` is
    ISO 8601 in UTC with an explicit offset; how many non-null ones there were."""
    seen = 0
    if isinstance(payload, dict):
        for key, value in payload.items():
            where = f"{path}.{key}"
            if _TIME_KEYS.search(key) and value is not None:
                assert isinstance(value, str), f"{where} is {value!r}"
                assert _ISO_UTC.match(value), f"{where} = {value!r} is not ISO 8601 with offset"
                parsed = datetime.fromisoformat(value)
                assert parsed.utcoffset() == timedelta(0), f"{where} = {value!r} is not UTC"
                seen += 1
            else:
                seen += assert_utc_timestamps(value, where)
    elif isinstance(payload, list):
        for i, item in enumerate(payload):
            seen += assert_utc_timestamps(item, f"{path}[{i}]")
    return seen


@asynccontextmanager
async def started_client(
    settings: Settings, *, clock: Clock | None = None, run_runner: bool = False
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    """A client for an app started (lifespan and all) from ``settings``."""
    container = build_container(settings, clock=clock)
    app = create_app(settings, container, run_runner=run_runner)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://vigil.test", headers=CLIENT_HEADERS
        ) as c:
            yield c, container
