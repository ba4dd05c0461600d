"""The composition root: builds every component of a Vigil process from its Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from vigil.actions.service import ActionService
from vigil.clock import Clock, SystemClock
from vigil.db.engine import Database, create_engine
from vigil.db.migrate import startup_lock, upgrade
from vigil.ingest.pipeline import IngestPipeline
from vigil.ingest.schemas import Limits
from vigil.observability.audit import Actor
from vigil.observability.metrics import VigilMetrics
from vigil.policy.runner import PolicyRunner
from vigil.policy.service import PolicyService
from vigil.policy.store import PolicyCache
from vigil.queue.redis import RedisConnection
from vigil.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Container:
    """Everything one Vigil process runs, built once from the settings."""

    settings: Settings
    clock: Clock
    metrics: VigilMetrics
    database: Database
    redis: RedisConnection | None
    limits: Limits
    policies: PolicyService
    actions: ActionService
    ingest: IngestPipeline
    runner: PolicyRunner

    async def start(self, *, run_runner: bool = True) -> None:
        """Migrate and load the policy file (each under the start-up lock), then start the loops."""
        if self.settings.auto_migrate:
            async with startup_lock(self.database):
                await upgrade(self.database)
        source, report = await self.policies.reload(actor=Actor("system"))
        log.info(
            "policies loaded from %s: %d created, %d updated, %d unchanged",
            source,
            report.created,
            report.updated,
            report.unchanged,
        )
        await self.policies.register_metrics()
        await self.ingest.start()
        if run_runner:
            await self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()
        await self.ingest.stop()
        if self.redis is not None:
            await self.redis.close()
        await self.database.dispose()


def build_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
) -> Container:
    """Wire up a process's components. Nothing is started until :meth:`Container.start`."""
    clock = clock or SystemClock()
    metrics = VigilMetrics(registry)
    database = Database(create_engine(settings))
    return Container(
        settings=settings,
        clock=clock,
        metrics=metrics,
        database=database,
        redis=RedisConnection(settings.redis_url) if settings.redis_url else None,
        limits=Limits(
            max_tags=settings.max_tags,
            max_tag_key_length=settings.max_tag_key_length,
            max_tag_value_length=settings.max_tag_value_length,
            max_target_length=settings.max_target_length,
        ),
        policies=PolicyService(
            database=database, clock=clock, metrics=metrics, policies_file=settings.policies_file
        ),
        actions=ActionService(database=database, clock=clock, metrics=metrics),
        ingest=IngestPipeline(
            database=database,
            policies=PolicyCache(),
            metrics=metrics,
            clock=clock,
            group_size=settings.ingest_group_size,
            queue_limit=settings.ingest_queue_limit,
        ),
        runner=PolicyRunner(
            database=database,
            metrics=metrics,
            clock=clock,
            enabled=settings.runner_enabled,
            interval=settings.runner_interval_seconds,
            retention=settings.metrics_retention_seconds,
            prune_chunk=settings.prune_chunk_size,
        ),
    )
