"""Health, readiness, metrics, and 503 (never 500) when the database goes away."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

import vigil
from tests import services
from tests.conftest import CLIENT_HEADERS
from tests.helpers import connection_lost
from vigil.api.app import create_app
from vigil.container import Container, build_container
from vigil.db.tables import metrics
from vigil.http.errors import RETRY_AFTER_SECONDS
from vigil.local import free_port
from vigil.settings import Settings


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "healthy", "service": "vigil", "version": vigil.__version__}
    for path, service in (
        ("/api/v1/ingest/health", "ingest"),
        ("/api/v1/actions/health", "actions"),
    ):
        assert (await client.get(path)).json() == {"status": "healthy", "service": service}


async def test_ready_checks_the_database(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_metrics_is_prometheus_text_without_redirect(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics", follow_redirects=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert f'vigil_build_info{{version="{vigil.__version__}"}} 1.0' in r.text


async def _client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, build_container(settings), run_runner=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://vigil.test", headers=CLIENT_HEADERS
        ) as c:
            yield c


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_ready_checks_redis_when_configured(settings: Settings) -> None:
    services.need_redis()
    good = settings.model_copy(update={"redis_url": services.REDIS_URL})
    async for c in _client_for(good):
        r = await c.get("/ready")
        assert r.status_code == 200
        assert r.json()["checks"] == {"database": "ok", "redis": "ok"}

    bad = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async for c in _client_for(bad):
        r = await c.get("/ready")
        assert r.status_code == 503
        assert r.json()["checks"] == {"database": "ok", "redis": "unavailable"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_database_down_gives_503_not_500(
    client: httpx.AsyncClient, database_url: str
) -> None:
    name = database_url.rsplit("/", 1)[1]
    await _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    await _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        r = await client.get("/ready")
        assert r.status_code == 503
        assert r.json()["checks"] == {"database": "unavailable"}
        assert r.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        r = await client.post("/api/v1/ingest", json={"name": "cpu", "value": 1, "target": "a"})
        assert r.status_code == 503
        assert r.json() == {"detail": "database unavailable"}
        assert r.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        r = await client.get("/api/v1/actions")
        assert r.status_code == 503
        assert r.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    finally:
        await _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    r = await client.post("/api/v1/ingest", json={"name": "cpu", "value": 1, "target": "a"})
    assert r.status_code == 201, "ingest recovers once the database is back"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("when", ["statement", "commit"])
async def test_a_connection_lost_mid_ingest_gives_503_with_retry_after(
    client: httpx.AsyncClient, container: Container, when: str
) -> None:
    """Ingest whose connection drops while it writes, or just as it commits, answers 503
    (with Retry-After), not 500; what it sent is not stored, and the next request is served."""
    with connection_lost(container.database.engine, at=when, after="INSERT INTO metrics ") as lost:
        r = await client.post("/api/v1/ingest", json={"name": "cpu", "value": 1, "target": "a"})
    assert lost
    assert r.status_code == 503
    assert r.json() == {"detail": "database unavailable"}
    assert r.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    r = await client.post("/api/v1/ingest", json={"name": "cpu", "value": 2, "target": "a"})
    assert r.status_code == 201
    async with container.database.read() as conn:
        stored = (await conn.execute(select(metrics.c.value))).scalars().all()
    assert stored == [2.0]


async def _admin(statement: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(services.PG_ADMIN_URL)
    try:
        return await conn.execute(statement)
    finally:
        await conn.close()
