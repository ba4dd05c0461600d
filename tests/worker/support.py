"""Building blocks for worker tests: a scripted executor and a world of real parts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from vigil.actions import store
from vigil.actions.service import ActionService
from vigil.clock import FakeClock
from vigil.db.engine import Database, create_engine
from vigil.observability.audit import Actor
from vigil.observability.metrics import VigilMetrics
from vigil.queue.memory import MemoryQueue
from vigil.remediation.config import Remediations, parse_remediations
from vigil.remediation.wire import RemediateRequest, RemediateResult
from vigil.settings import Settings
from vigil.worker.backoff import RetryPolicy
from vigil.worker.worker import Worker

REMEDIATIONS = """
remediations:
  - action: restart-service
    plugin: log
  - action: flaky
    plugin: log
    retries: {max_attempts: 2, backoff_seconds: 10}
"""


def success(message: str = "done") -> RemediateResult:
    return RemediateResult(status="success", message=message, details={}, duration_ms=1.0)


def failure(message: str = "boom", *, retryable: bool = True) -> RemediateResult:
    return RemediateResult(
        status="failed", message=message, details={}, duration_ms=1.0, retryable=retryable
    )


@dataclass
class ScriptedExecutor:
    """Answers from a script (the last answer repeats); records every request."""

    answers: list[RemediateResult] = field(default_factory=lambda: [success()])
    calls: list[RemediateRequest] = field(default_factory=list)
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def execute(self, request: RemediateRequest) -> RemediateResult:
        self.calls.append(request)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        index = min(len(self.calls) - 1, len(self.answers) - 1)
        return self.answers[index]


@dataclass
class World:
    database: Database
    clock: FakeClock
    queue: MemoryQueue
    metrics: VigilMetrics
    remediations: Remediations
    actions: ActionService

    def worker(self, executor: Any, name: str = "worker-1", **overrides: Any) -> Worker:
        options: dict[str, Any] = {
            "name": name,
            "database": self.database,
            "queue": self.queue,
            "executor": executor,
            "remediations": self.remediations,
            "clock": self.clock,
            "metrics": self.metrics,
            "retry": RetryPolicy(max_attempts=3, base_seconds=2, max_seconds=300),
            "concurrency": 4,
            "lease_seconds": 60,
            "max_deliveries": 5,
            "shutdown_timeout": 5,
            "block": 0.05,
        }
        options.update(overrides)
        return Worker(**options)

    async def manual(
        self,
        action: str = "restart-service",
        target: str = "web-01",
        tags: dict[str, str] | None = None,
    ) -> int:
        record = await self.actions.create_manual(
            target=target,
            action=action,
            params={"n": 1},
            details=None,
            actor=Actor("tester"),
            tags=tags,
        )
        return record.id

    async def action(self, action_id: int) -> store.Action:
        async with self.database.read() as conn:
            return await store.get_action(conn, action_id=action_id)

    async def history(self, action_id: int) -> list[store.HistoryRow]:
        async with self.database.read() as conn:
            return await store.history(conn, action_id=action_id)


@asynccontextmanager
async def world(database_url: str, *, visibility: float = 30.0) -> AsyncIterator[World]:
    database = Database(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    clock = FakeClock()
    queue = MemoryQueue(clock=clock, visibility_timeout=visibility)
    metrics = VigilMetrics()
    remediations = parse_remediations(REMEDIATIONS, source="test remediations")
    try:
        yield World(
            database=database,
            clock=clock,
            queue=queue,
            metrics=metrics,
            remediations=remediations,
            actions=ActionService(
                database=database,
                clock=clock,
                metrics=metrics,
                queue=queue,
                knows_action=remediations.knows,
            ),
        )
    finally:
        await queue.close()
        await database.dispose()
