"""The background runner: evaluates the conditions that need stored samples (``for``,
``window``, ``rate``, ``absent``) and asks the ``promql`` policies' queries of the TSDB,
resolves firing pairs, expires approvals, and applies the retention of samples and
decisions.

Exactly one runner is active across processes: each pass starts by taking (or renewing) the
``policy-runner`` lease in the database; a runner that does not hold it waits and asks
again, so when the leader dies another takes over within two intervals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions import approval
from vigil.actions.dispatch import Dispatcher
from vigil.alerts.stale import settle_alerts
from vigil.alerts.store import prune_alerts
from vigil.clock import Clock
from vigil.db import leases
from vigil.db.engine import Database
from vigil.decide import episodes
from vigil.decide.pause import get_state
from vigil.decide.reasons import outcome_of
from vigil.decide.recorder import Decision, count_decisions, record_observations
from vigil.decide.silence_rules import silencing
from vigil.decide.silences import active_rules
from vigil.decide.verification import Verified, verify
from vigil.errors import Unavailable
from vigil.ingest.keys import prune_keys_before
from vigil.ingest.store import lock_targets, prune_before, prune_latest_before
from vigil.notify.events import NotificationEvent
from vigil.observability.audit import Actor
from vigil.observability.logging import get_logger
from vigil.observability.metrics import VigilMetrics
from vigil.policy.models import PolicySpec
from vigil.policy.prometheus import PrometheusClient
from vigil.policy.promql_pass import PromQLPolicies
from vigil.policy.store import PolicyCache
from vigil.policy.sweep import sweep

log = get_logger(__name__)

LEASE = "policy-runner"
_GONE_STALE_KEPT = 10_000


class PolicyRunner:
    """Runs a pass every ``interval`` seconds until stopped."""

    def __init__(
        self,
        *,
        database: Database,
        metrics: VigilMetrics,
        clock: Clock,
        enabled: bool,
        interval: float,
        retention: float,
        prune_chunk: int,
        name: str = "runner",
        decision_retention: float = 30 * 86400.0,
        dispatcher: Dispatcher | None = None,
        key_ttl: float = 86400.0,
        alert_stale: float = 900.0,
        prometheus: PrometheusClient | None = None,
        wanted: frozenset[NotificationEvent] = frozenset(),
    ) -> None:
        """``wanted``: the notification events the notifications file records
        (:attr:`vigil.notify.config.Notifications.recorded`): an episode's end and a
        verification's verdict are told only when their events are among them."""
        self._wanted = wanted
        self.promql = PromQLPolicies(
            prometheus, database=database, metrics=metrics, budget=interval
        )
        self.name = name
        self.alert_stale = alert_stale
        self._started = clock.now()
        """Alerts go stale only once this runner has listened for ``alert_stale`` seconds:
        after Vigil itself was away, Alertmanager gets a repeat interval to be heard."""
        self._gone_stale: dict[tuple[str, str], int] = {}
        """(policy, target) → the episode that ended because its alert went stale (kept by
        the leader, the latest ``_GONE_STALE_KEPT``): its actions verify ``inconclusive``."""
        self.decision_retention = decision_retention
        self.key_ttl = key_ttl
        self._dispatcher = dispatcher
        self._policies = PolicyCache()
        self.leader = False
        self.leader_name: str | None = None
        self.last_evaluated = 0
        self.last_decisions = 0
        self.last_verified = 0
        self._db = database
        self._metrics = metrics
        self._clock = clock
        self.enabled = enabled
        self.interval = interval
        self.retention = retention
        self._prune_chunk = prune_chunk
        self._task: asyncio.Task[None] | None = None
        self.last_run_at: datetime | None = None
        self.last_duration_ms: float | None = None
        self.last_pruned = 0
        self.last_error: str | None = None
        self.runs = 0
        self._ran = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="vigil-runner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            if self.leader:
                with contextlib.suppress(Exception):
                    async with self._db.write() as conn:
                        await leases.release(conn, name=LEASE, holder=self.name)
                self.leader = False

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                if await self.lead():
                    await self.run_once()
            except Unavailable as exc:  # an outage: one line a pass, no traceback
                self.last_error = repr(exc)
                log.warning("runner.unavailable", runner=self.name, error=exc.message)
            except Exception as exc:  # keep running: the next pass may succeed
                self.last_error = repr(exc)
                log.exception("runner.pass_failed", runner=self.name)
            # The leader renews every interval, counted from its last renewal (so a long
            # pass does not let the lease lapse); a follower asks twice an interval, so it
            # takes over soon after a lease lapses.
            wait = self.interval if self.leader else self.interval / 2
            await asyncio.sleep(max(0.0, wait - (time.monotonic() - started)))

    async def lead(self) -> bool:
        """Take or renew the runner lease; whether this runner leads now."""
        now = self._clock.now()
        try:
            async with self._db.write() as conn:
                self.leader = await leases.acquire(
                    conn, name=LEASE, holder=self.name, now=now, ttl=self.interval * 1.5
                )
                self.leader_name = await leases.holder_of(conn, name=LEASE, now=now)
        except Unavailable:
            self.leader = False
            raise
        return self.leader

    async def evaluate(self) -> list[Decision]:
        """Judge the history conditions and settle firing pairs; the decisions made."""
        now = self._clock.now()
        created: list[Decision] = []
        asked = await self.promql.ask(now)  # HTTP: before the transaction
        gone_stale: dict[tuple[str, str], int] = {}
        async with self._db.write() as conn:
            index = await self._policies.index(conn)
            observations = await sweep(conn, index=index, now=now)
            observations += await settle_alerts(
                conn,
                index=index,
                now=now,
                stale_after=self.alert_stale,
                listening_since=self._started,
                gone_stale=gone_stale,
            )
            observations += await self.promql.observe(conn, index=index, asked=asked)
            self.last_evaluated = len(observations)
            if observations:
                await lock_targets(conn, targets=(o.target for o in observations))
                recorded = await record_observations(
                    conn, observations=observations, now=now, actor=Actor(), wanted=self._wanted
                )
                created = recorded.decisions
                if recorded.firing_changed:
                    await episodes.bump_firing(conn)
        self._gone_stale.update(gone_stale)  # committed: those episodes did end so
        while len(self._gone_stale) > _GONE_STALE_KEPT:
            del self._gone_stale[next(iter(self._gone_stale))]
        async with self._db.write() as conn:
            expired = await approval.expire(conn, now=now)
        async with self._db.write() as conn:
            verified = await self._verify(conn, index.policies, now)
        verdicts = [v for v in verified if not v.held]
        self.last_verified = len(verdicts)
        for outcome in verdicts:
            self._metrics.verifications_total.labels(result=outcome.result).inc()
        for outcome in verified:
            if outcome.decided:  # escalations are decisions too, counted as ingest's are
                self._metrics.decisions_total.labels(
                    outcome=outcome_of(outcome.suppressed),
                    reason="" if outcome.suppressed is None else outcome.suppressed.value,
                ).inc()
        escalations = [v.escalation for v in verified if v.escalation is not None]
        for record in escalations:
            self._metrics.actions_total.labels(action=record.action, status=record.status).inc()
        for record in expired:
            self._metrics.actions_total.labels(action=record.action, status="cancelled").inc()
        count_decisions(self._metrics, created)
        if self._dispatcher is not None:
            await self._dispatcher.dispatch(
                [*(d.action for d in created if d.action is not None), *escalations]
            )
        return created

    async def _verify(
        self, conn: AsyncConnection, policies: Sequence[PolicySpec], now: datetime
    ) -> list[Verified]:
        """Verify completed actions whose window has closed (or whose policy resolved)."""
        held = self.promql.unavailable  # the TSDB did not answer: their verdicts wait
        with_verify = {p.name: p for p in policies if p.verify is not None and p.name not in held}
        if not with_verify:
            return []
        paused = (await get_state(conn)).paused
        rules = await active_rules(conn, now=now)

        def silenced(policy: str, target: str, tags: Mapping[str, str]) -> bool:
            found = silencing(rules, policy=policy, target=target, tags=tags, now=now)
            return found is not None

        return await verify(
            conn,
            policies=with_verify,
            now=now,
            paused=paused,
            silenced=silenced,
            actor=Actor(),
            outages=self.promql.ended_outages(),
            unknown=self._gone_stale,
            wanted=self._wanted,
        )

    async def run_once(self) -> int:
        """One pass: evaluate, then delete samples older than the retention, ingest
        idempotency keys older than theirs, and decisions older than theirs; how many
        samples were deleted."""
        started = time.perf_counter()
        decisions = await self.evaluate()
        self.last_decisions = len(decisions)
        cutoff = self._clock.now() - timedelta(seconds=self.retention)
        pruned = 0
        while True:
            async with self._db.write() as conn:
                deleted = await prune_before(conn, cutoff=cutoff, limit=self._prune_chunk)
            pruned += deleted
            if deleted < self._prune_chunk:
                break
        async with self._db.write() as conn:
            await prune_latest_before(conn, cutoff=cutoff)
            await prune_alerts(conn, seen_before=cutoff)
        keys_before = self._clock.now() - timedelta(seconds=self.key_ttl)
        while True:
            async with self._db.write() as conn:
                deleted = await prune_keys_before(conn, cutoff=keys_before, limit=self._prune_chunk)
            if deleted < self._prune_chunk:
                break
        decided_before = self._clock.now() - timedelta(seconds=self.decision_retention)
        while True:
            async with self._db.write() as conn:
                deleted = await episodes.prune_decisions(
                    conn, before=decided_before, limit=self._prune_chunk
                )
            if deleted < self._prune_chunk:
                break
        duration = time.perf_counter() - started
        self.last_run_at = self._clock.now()
        self.last_duration_ms = round(duration * 1000, 3)
        self.last_pruned = pruned
        self.last_error = None
        self.runs += 1
        self._metrics.metrics_pruned_total.inc(pruned)
        self._metrics.runner_last_run.set(self.last_run_at.timestamp())
        self._metrics.runner_duration.set(duration)
        async with self._ran:
            self._ran.notify_all()
        return pruned

    async def wait_for_runs(self, count: int) -> None:
        """Return once at least ``count`` passes have finished."""
        async with self._ran:
            await self._ran.wait_for(lambda: self.runs >= count)

    async def describe(self) -> dict[str, Any]:
        """:meth:`status`, with the lease holder read from the database: who leads now."""
        status = self.status()
        async with self._db.read() as conn:
            holder = await leases.holder_of(conn, name=LEASE, now=self._clock.now())
        status["leader"] = holder == self.name
        status["leader_name"] = holder
        return status

    def status(self) -> dict[str, Any]:
        """The runner's state, as ``GET /api/v1/policies/runner/status`` shows it."""
        return {
            "enabled": self.enabled,
            "running": self.running,
            "interval_seconds": self.interval,
            "last_run_at": self.last_run_at,
            "last_duration_ms": self.last_duration_ms,
            "leader": self.leader,
            "leader_name": self.leader_name,
            "name": self.name,
            "runs": self.runs,
            "last_evaluated": self.last_evaluated,
            "last_decisions": self.last_decisions,
            "last_verified": self.last_verified,
            "decision_retention_seconds": self.decision_retention,
            "retention_seconds": self.retention,
            "last_pruned": self.last_pruned,
            "last_error": self.last_error,
            "promql": self.promql.status(),
        }
