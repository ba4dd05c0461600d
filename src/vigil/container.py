"""The composition root: builds every component of a Vigil process from its Settings."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from vigil.access.keys import KeyGuard
from vigil.actions.dispatch import Dispatcher
from vigil.actions.service import ActionService
from vigil.alerts.receiver import AlertReceiver
from vigil.clock import Clock, SystemClock
from vigil.db.engine import Database, create_engine
from vigil.db.migrate import startup_lock, upgrade
from vigil.errors import Unavailable
from vigil.ingest.pipeline import IngestPipeline
from vigil.ingest.schemas import Limits
from vigil.notify.channels.registry import build_channels
from vigil.notify.config import EVERY_VARIABLE, Notifications, load_notifications
from vigil.notify.sender import Notifier
from vigil.observability.audit import Actor
from vigil.observability.logging import get_logger
from vigil.observability.metrics import VigilMetrics
from vigil.policy.prometheus import PrometheusClient
from vigil.policy.runner import PolicyRunner
from vigil.policy.service import PolicyService
from vigil.policy.store import PolicyCache
from vigil.queue.keys import QueueKeys
from vigil.queue.memory import MemoryQueue
from vigil.queue.redis import RedisConnection, RedisStreamQueue
from vigil.queue.task import TaskQueue
from vigil.remediation.client import RemoteExecutor
from vigil.remediation.config import Remediations, load_remediations
from vigil.remediation.execute import runner_for
from vigil.remediation.metrics import RemediatorMetrics
from vigil.remediation.plugins.base import Plugin
from vigil.remediation.plugins.simulator import SimulatorPlugin
from vigil.remediation.registry import load_plugins
from vigil.remediation.service import (
    EXPIRY_GRACE_SECONDS,
    Executor,
    LocalExecutor,
    Remediator,
)
from vigil.settings import Settings
from vigil.simulator.control import SimulatorControl, loopback_url
from vigil.simulator.fleet import Fleet
from vigil.worker.backoff import RetryPolicy
from vigil.worker.reconciler import Reconciler
from vigil.worker.worker import Worker

log = get_logger(__name__)


WORKER_ROLE = "worker"
"""The role of ``vigil worker`` processes (see :func:`build_container`)."""


def process_name(role: str) -> str:
    """A name for this process in leases and history: role, host, pid and a random tag."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Container:
    """Everything one Vigil process runs, built once from the settings."""

    settings: Settings
    clock: Clock
    metrics: VigilMetrics
    database: Database
    redis: RedisConnection | None
    queue: TaskQueue
    remediations: Remediations
    plugins: dict[str, Plugin]
    limits: Limits
    policies: PolicyService
    actions: ActionService
    ingest: IngestPipeline
    runner: PolicyRunner
    alerts: AlertReceiver
    keys: KeyGuard
    notifier: Notifier
    notifications: Notifications
    """The notifications file's channels and routes (with ``VIGIL_NOTIFY_WEBHOOK_URLS``)."""
    name: str
    simulator: SimulatorControl
    worker: Worker | None = None
    reconciler: Reconciler | None = None
    prometheus: PrometheusClient | None = None
    """The query API ``promql`` conditions are asked of (VIGIL_PROMETHEUS_URL)."""
    _started: list[str] = field(default_factory=list)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _remediator_metrics: RemediatorMetrics | None = None

    @property
    def fleet(self) -> Fleet:
        """The simulated fleet: what the simulator sends and its remediations act on."""
        return self.simulator.fleet

    async def start(
        self, *, run_runner: bool = True, run_worker: bool = False, run_ingest: bool = True
    ) -> None:
        """Migrate and load the policy file (each under the start-up lock), then start the loops.

        API processes (``run_ingest``) also send notifications to the configured webhooks."""
        if self.settings.auto_migrate:
            async with startup_lock(self.database):
                await upgrade(self.database)
        if run_ingest:
            source, report = await self.policies.reload(actor=Actor("system"), unchecked_ok=True)
            log.info(
                "policies.loaded",
                source=source,
                created=report.created,
                updated=report.updated,
                unchanged=report.unchanged,
            )
            await self.policies.register_metrics()
            await self.ingest.start()
            self._started.append("ingest")
            await self.notifier.start()
            self._started.append("notifier")
        if run_runner:
            await self.runner.start()
            self._started.append("runner")
        if run_worker:
            if run_ingest and self.settings.simulator_on:
                # This process serves the fleet API: its remediations act on its own fleet.
                plugin = self.plugins.get("simulator")
                if isinstance(plugin, SimulatorPlugin):
                    plugin.attach(lambda: self.simulator.fleet)
            self.worker = self._build_worker()
            self.reconciler = Reconciler(
                name=self.name,
                database=self.database,
                queue=self.queue,
                clock=self.clock,
                metrics=self.metrics,
                interval=self.settings.reconcile_interval_seconds,
                visibility_timeout=self.settings.queue_visibility_timeout_seconds,
            )
            await self.worker.start()
            await self.reconciler.start()

    async def stop(self) -> None:
        await self.simulator.close()
        if self.worker is not None:
            await self.worker.stop()
        if self.reconciler is not None:
            await self.reconciler.stop()
        if "runner" in self._started:
            await self.runner.stop()
        if "ingest" in self._started:
            await self.ingest.stop()
        if "notifier" in self._started:
            await self.notifier.stop()
        await self.notifier.aclose()
        self._started.clear()
        await self._close_executor()
        if self.prometheus is not None:
            await self.prometheus.close()
        await self.queue.close()
        if self.redis is not None:
            await self.redis.close()
        await self.database.dispose()

    async def refresh_queue_gauges(self) -> None:
        """Read the queue's depth and dead letter into their gauges (at scrape time)."""
        try:
            stats = await self.queue.stats()
        except Unavailable:
            return
        self.metrics.queue_depth.set(stats.queue_length)
        self.metrics.queue_dead_letter.set(stats.dead_letter_length)

    def _build_worker(self) -> Worker:
        s = self.settings
        return Worker(
            name=self.name,
            database=self.database,
            queue=self.queue,
            executor=self._executor(),
            remediations=self.remediations,
            clock=self.clock,
            metrics=self.metrics,
            retry=RetryPolicy(
                max_attempts=s.worker_max_attempts,
                base_seconds=s.worker_retry_base_seconds,
                max_seconds=s.worker_retry_max_seconds,
            ),
            concurrency=s.worker_concurrency,
            lease_seconds=s.worker_lease_seconds,
            max_deliveries=s.queue_max_deliveries,
            shutdown_timeout=s.worker_shutdown_timeout_seconds,
            visibility_timeout=s.queue_visibility_timeout_seconds,
            wanted=self.notifications.recorded,
        )

    def _executor(self) -> Executor:
        """The remediator service when VIGIL_REMEDIATOR_URL is set, else the same
        deduplicating code in-process, with the plugins of this process."""
        s = self.settings
        remediations = self.remediations
        run, timeout_for = runner_for(
            remediations, self.plugins, self.clock, default_timeout=s.remediator_timeout_seconds
        )
        if s.remediator_url is not None:
            remote = RemoteExecutor.from_settings(s, timeout_for=timeout_for, clock=self.clock)
            self._closers.append(remote.close)
            return remote
        if self._remediator_metrics is None:
            # On this process's registry: its /metrics shows what it remediated in-process.
            self._remediator_metrics = RemediatorMetrics(self.metrics.registry)
        remediator = Remediator(
            database=self.database,
            clock=self.clock,
            run=run,
            timeout_for=timeout_for,
            owner=self.name,
            metrics=self._remediator_metrics,
        )
        # Long enough for a copy of an attempt to wait out the longest remediation running it
        # (or its record turning "interrupted"), so it never gives up while that still runs.
        longest = max(
            (entry.timeout for entry in remediations.entries),
            default=s.remediator_timeout_seconds,
        )
        return LocalExecutor(
            remediator,
            wait_seconds=max(longest, s.remediator_timeout_seconds) + EXPIRY_GRACE_SECONDS + 5,
        )

    async def _close_executor(self) -> None:
        while self._closers:
            await self._closers.pop()()


def build_queue(settings: Settings, redis: RedisConnection | None, clock: Clock) -> TaskQueue:
    """Redis Streams when REDIS_URL is set, else the in-process queue."""
    if redis is not None:
        return RedisStreamQueue(
            redis.client,
            keys=QueueKeys(settings.queue_prefix),
            clock=clock,
            visibility_timeout=settings.queue_visibility_timeout_seconds,
        )
    return MemoryQueue(clock=clock, visibility_timeout=settings.queue_visibility_timeout_seconds)


def build_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    role: str = "vigil",
) -> Container:
    """Wire up a process's components. Nothing is started until :meth:`Container.start`."""
    clock = clock or SystemClock()
    metrics = VigilMetrics(registry)
    database = Database(create_engine(settings), write_wait=settings.db_busy_timeout_seconds)
    redis = RedisConnection(settings.redis_url) if settings.redis_url else None
    queue = build_queue(settings, redis, clock)
    plugins = load_plugins()
    remediations = load_remediations(settings.remediations_file, plugins=plugins)
    # A worker never sends: it needs the routes (which events to record) but not the
    # channels' secrets, so it does not have to hold them.
    sends = role != WORKER_ROLE
    notifications = load_notifications(
        settings.notifications_file,
        webhook_urls=settings.notify_webhook_urls,
        env=None if sends else EVERY_VARIABLE,
    )
    wanted = notifications.recorded
    dispatcher = Dispatcher(queue)
    name = process_name(role)
    keys = KeyGuard(database, settings.auth)
    prometheus = (
        PrometheusClient(settings.prometheus_url, timeout=settings.prometheus_timeout_seconds)
        if settings.prometheus_url is not None
        else None
    )
    return Container(
        settings=settings,
        clock=clock,
        metrics=metrics,
        database=database,
        redis=redis,
        queue=queue,
        remediations=remediations,
        plugins=plugins,
        limits=Limits(
            max_tags=settings.max_tags,
            max_tag_key_length=settings.max_tag_key_length,
            max_tag_value_length=settings.max_tag_value_length,
            max_target_length=settings.max_target_length,
        ),
        policies=PolicyService(
            database=database,
            clock=clock,
            metrics=metrics,
            policies_file=settings.policies_file,
            knows_action=remediations.knows,
            runner_interval=settings.runner_interval_seconds,
            prometheus=prometheus,
        ),
        actions=ActionService(
            database=database,
            clock=clock,
            metrics=metrics,
            queue=queue,
            knows_action=remediations.knows,
        ),
        ingest=IngestPipeline(
            database=database,
            policies=PolicyCache(),
            metrics=metrics,
            clock=clock,
            group_size=settings.ingest_group_size,
            queue_limit=settings.ingest_queue_limit,
            dispatcher=dispatcher,
            key_ttl=settings.idempotency_ttl_seconds,
            wanted=wanted,
        ),
        runner=PolicyRunner(
            database=database,
            metrics=metrics,
            clock=clock,
            enabled=settings.runner_enabled,
            interval=settings.runner_interval_seconds,
            retention=settings.metrics_retention_seconds,
            prune_chunk=settings.prune_chunk_size,
            name=name,
            decision_retention=settings.decision_retention,
            dispatcher=dispatcher,
            key_ttl=settings.idempotency_ttl_seconds,
            alert_stale=settings.alert_stale_seconds,
            prometheus=prometheus,
            wanted=wanted,
        ),
        alerts=AlertReceiver(
            database=database, metrics=metrics, clock=clock, dispatcher=dispatcher, wanted=wanted
        ),
        notifier=Notifier(
            database=database,
            clock=clock,
            metrics=metrics,
            notifications=notifications,
            channels=(
                build_channels(notifications, timeout=settings.notify_timeout_seconds)
                if sends
                else {}
            ),
            external_url=settings.external_url,
            timeout=settings.notify_timeout_seconds,
            retry=RetryPolicy(
                max_attempts=settings.notify_max_attempts,
                base_seconds=settings.notify_retry_base_seconds,
                max_seconds=settings.notify_retry_max_seconds,
            ),
            interval=settings.notify_interval_seconds,
        ),
        notifications=notifications,
        keys=keys,
        name=name,
        prometheus=prometheus,
        simulator=SimulatorControl(
            base_url=loopback_url(settings.host, settings.port),
            api_key=keys.internal_key,
            clock=clock,
        ),
    )
