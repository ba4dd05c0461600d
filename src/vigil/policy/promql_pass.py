"""The runner's ``promql`` policies: ask each one's queries of the TSDB, then judge the
answers (:mod:`vigil.policy.promql`) into observations for the decision core.

The queries are asked before the pass opens its write transaction (no transaction is held
across an HTTP call). When a policy's query fails -- the TSDB unreachable or timing out, a
5xx, a refused query -- the pass records nothing for that policy: its pairs stay as they
are (nothing resolves because the TSDB is away), and verification of its actions waits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.db.engine import Database
from vigil.decide import episodes
from vigil.decide.observations import Observation
from vigil.decide.state import PairPhase
from vigil.errors import InvalidInput, VigilError
from vigil.observability.logging import get_logger
from vigil.observability.metrics import VigilMetrics
from vigil.policy.evaluator import PolicyIndex
from vigil.policy.models import PolicySpec, PromQLCondition
from vigil.policy.prometheus import PrometheusClient
from vigil.policy.promql import Found, judge, targets_of
from vigil.policy.store import PolicyCache

log = get_logger(__name__)

CONCURRENCY = 8
"""How many queries a pass asks at once."""

NOT_CONFIGURED = "VIGIL_PROMETHEUS_URL is not set: promql conditions cannot be asked"


@dataclass(frozen=True, slots=True)
class Answer:
    """What one policy's queries returned."""

    policy: PolicySpec
    found: Found
    cleared: Found | None


@dataclass(slots=True)
class Asked:
    """The answers of one pass, and the policies whose queries failed (with the error)."""

    at: datetime
    answers: dict[str, Answer] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class PromQLPolicies:
    """Asks the ``promql`` policies' queries each runner pass and judges the answers;
    remembers what the last pass could not ask, for the runner's status and verification."""

    def __init__(
        self,
        client: PrometheusClient | None,
        *,
        database: Database,
        metrics: VigilMetrics,
        budget: float = 10.0,
    ) -> None:
        self._client = client
        self._budget = max(budget, client.timeout if client is not None else 0.0)
        """How long a pass's queries may take in all (at least one query's timeout): a
        pass that asks longer could outlast the runner's lease."""
        self._db = database
        self._metrics = metrics
        self._cache = PolicyCache()
        self.policies = 0
        self.unavailable: dict[str, str] = {}
        """Policy → error, of the last pass."""
        self.last_error: str | None = None
        self.unlabelled: dict[str, int] = {}
        """Policy → series of the last pass without a target label."""
        self.outages: dict[str, tuple[datetime, datetime | None]] = {}
        """Policy → its last outage: from its last answered pass before its query failed
        (nothing is known since) to the pass it was answered again (None while it still
        fails)."""
        self._answered: dict[str, datetime] = {}

    async def ask(self, now: datetime) -> Asked:
        """Ask every enabled ``promql`` policy's queries (outside any transaction)."""
        async with self._db.read() as conn:
            index = await self._cache.index(conn)
        asked = Asked(now)
        self.policies = len(index.promql)
        if not index.promql:
            self.unavailable, self.unlabelled = {}, {}
            return asked
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(policy: PolicySpec) -> None:
            async with limit:
                try:
                    asked.answers[policy.name] = await self._answer(policy, now)
                except VigilError as exc:
                    asked.failed[policy.name] = exc.message
                    result = "error" if isinstance(exc, InvalidInput) else "unavailable"
                    self._metrics.promql_queries_total.labels(result=result).inc()

        try:
            async with asyncio.timeout(self._budget):
                await asyncio.gather(*(one(p) for p in index.promql))
        except TimeoutError:
            late = f"not answered within the pass's {self._budget:g}s for queries"
            for policy in index.promql:
                if policy.name not in asked.answers and policy.name not in asked.failed:
                    asked.failed[policy.name] = late
                    self._metrics.promql_queries_total.labels(result="unavailable").inc()
        self._remember(asked, now)
        return asked

    async def _answer(self, policy: PolicySpec, now: datetime) -> Answer:
        if self._client is None:
            raise VigilError(NOT_CONFIGURED)
        assert isinstance(policy.condition, PromQLCondition)
        series = await self._client.query(policy.condition.query, now)
        self._metrics.promql_queries_total.labels(result="ok").inc()
        cleared = None
        if isinstance(policy.clear, PromQLCondition):
            clear_series = await self._client.query(policy.clear.query, now)
            self._metrics.promql_queries_total.labels(result="ok").inc()
            cleared = targets_of(policy, clear_series)
        return Answer(policy, targets_of(policy, series), cleared)

    def _remember(self, asked: Asked, now: datetime) -> None:
        for name in asked.failed:
            if (
                self.outages.get(name, (now, now))[1] is not None
            ):  # a new outage: unknown since the last answer
                self.outages[name] = (self._answered.get(name, now), None)
        for name in asked.answers:
            self._answered[name] = now
            if name in self.outages and self.outages[name][1] is None:
                self.outages[name] = (self.outages[name][0], now)
        self.unavailable = dict(sorted(asked.failed.items()))
        self.unlabelled = {
            name: a.found.unlabelled for name, a in asked.answers.items() if a.found.unlabelled
        }
        self._metrics.runner_promql_unavailable.set(len(asked.failed))
        if asked.failed:
            self.last_error = next(iter(self.unavailable.values()))
            # No decision is made for these policies this pass: say so once.
            log.warning(
                "runner.promql_unavailable",
                policies=sorted(asked.failed),
                error=self.last_error,
                effect="their episodes stay as they are and their verifications wait",
            )
        if self.unlabelled:
            log.warning(
                "runner.promql_unlabelled",
                series=self.unlabelled,
                hint="set the policy's target_label, or keep a target label in the query",
            )

    async def observe(
        self, conn: AsyncConnection, *, index: PolicyIndex, asked: Asked
    ) -> list[Observation]:
        """The observations the answers make, judged against the pairs' stored states
        (in the pass's write transaction). A policy changed since its queries were asked
        is left for the next pass."""
        current = {p.name: p for p in index.promql}
        answers = [a for a in asked.answers.values() if current.get(a.policy.name) == a.policy]
        if not answers:
            return []
        names = {a.policy.name for a in answers}
        phases: dict[str, dict[str, PairPhase]] = {name: {} for name in names}
        for episode in await episodes.unsettled(conn):
            if episode.policy_name in names:
                phases[episode.policy_name][episode.target] = episode.phase
        observations: list[Observation] = []
        for answer in answers:
            name = answer.policy.name
            observations += judge(
                answer.policy, answer.found, answer.cleared, phases[name], asked.at
            )
        return observations

    def ended_outages(self) -> dict[str, tuple[datetime, datetime]]:
        """Each policy's last outage that has ended: (first failed pass, first answered
        pass again). Verification extends a window such an outage overlapped."""
        return {n: (s, e) for n, (s, e) in self.outages.items() if e is not None}

    def status(self) -> dict[str, Any]:
        """The ``promql`` part of the runner's status."""
        return {
            "configured": self._client is not None,
            "policies": self.policies,
            "unavailable": sorted(self.unavailable),
            "last_error": self.last_error,
            "unlabelled": dict(self.unlabelled),
        }
