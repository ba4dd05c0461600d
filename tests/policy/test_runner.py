"""The background runner applies metric retention, and rides out an outage quietly."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import func, select

from vigil.clock import FakeClock
from vigil.container import Container, build_container
from vigil.db.tables import metric_latest, metrics
from vigil.local import free_port
from vigil.settings import Settings


async def _count(container: Container, table: object) -> int:
    async with container.database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_retention_prunes_old_samples_and_keeps_recent_ones(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    now = clock.now()
    old = (now - timedelta(hours=25)).isoformat()
    recent = (now - timedelta(hours=1)).isoformat()
    batch = [
        {"name": "cpu", "value": 1, "target": "old-host", "timestamp": old},
        {"name": "cpu", "value": 2, "target": "web-01", "timestamp": old},
        {"name": "cpu", "value": 3, "target": "web-01", "timestamp": recent},
    ]
    assert (await client.post("/api/v1/ingest/batch", json={"metrics": batch})).status_code == 201
    assert await _count(container, metrics) == 3

    assert await container.runner.lead()
    pruned = await container.runner.run_once()

    assert pruned == 2
    async with container.database.read() as conn:
        rows = (await conn.execute(select(metrics.c.target, metrics.c.value))).all()
        latest = (await conn.execute(select(metric_latest.c.target))).scalars().all()
    assert [(r.target, r.value) for r in rows] == [("web-01", 3.0)]
    assert latest == ["web-01"], "a latest value not refreshed within the retention is forgotten"
    status = (await client.get("/api/v1/policies/runner/status")).json()["runner"]
    assert status["last_pruned"] == 2
    assert status["leader"] is True
    assert status["last_run_at"] is not None


@pytest.mark.parametrize("settings_overrides", [{"prune_chunk_size": 7}])
async def test_pruning_a_backlog_larger_than_one_chunk(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    old = (clock.now() - timedelta(days=2)).isoformat()
    batch = [{"name": "m", "value": i, "target": "t", "timestamp": old} for i in range(30)]
    assert (await client.post("/api/v1/ingest/batch", json={"metrics": batch})).status_code == 201
    assert await container.runner.run_once() == 30
    assert await _count(container, metrics) == 0


async def test_runner_runs_in_the_background(container: Container) -> None:
    await container.start(run_runner=True)
    try:
        async with asyncio.timeout(10):
            await container.runner.wait_for_runs(2)
        assert container.runner.status()["running"] is True
    finally:
        await container.stop()
    assert container.runner.status()["running"] is False


async def test_an_unreachable_database_is_one_warning_a_pass(tmp_path: Path) -> None:
    """While the database is away each pass logs one warning line, with no traceback (an
    outage is expected; a traceback is kept for what is not)."""
    settings = Settings(
        database_url=f"postgresql://root@127.0.0.1:{free_port()}/nothing_listens_here",
        policies_file=tmp_path / "none.yaml",
        auto_migrate=False,
        runner_interval_seconds=0.05,
    )
    container = build_container(settings, clock=FakeClock())
    outages: list[str] = []
    two_passes = asyncio.Event()

    def count(_logger: object, _method: str, event: MutableMapping[str, Any]) -> Any:
        if event["event"] in ("runner.unavailable", "runner.pass_failed"):
            outages.append(event["event"])
            if len(outages) >= 2:
                two_passes.set()
        return event

    with structlog.testing.capture_logs(processors=[count]) as logs:
        await container.start(run_runner=True, run_ingest=False)
        try:
            async with asyncio.timeout(10):
                await two_passes.wait()
        finally:
            await container.stop()
    passes = [e for e in logs if e["event"] in ("runner.unavailable", "runner.pass_failed")]
    assert {e["event"] for e in passes} == {"runner.unavailable"}
    assert all(e["log_level"] == "warning" and "exc_info" not in e for e in passes)
    assert "database unavailable" in passes[0]["error"]
    assert container.runner.status()["last_error"]
