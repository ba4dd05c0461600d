"""The ingest pipeline: store samples, evaluate policies, record decisions — in one transaction.

Concurrent requests are grouped: a single writer task takes every request waiting in its
queue and handles them in one transaction (group commit), so a burst of small requests costs
one commit instead of one each. Each request still gets its own answer; if a group fails,
its requests are retried one by one so one bad request cannot fail its neighbours.

A request may carry an :class:`IdempotencyKey`: its key is claimed, and its answer stored,
in the same transaction as its samples (:mod:`vigil.ingest.keys`), so a retry of a request
that was stored gets the same answer and stores nothing.

One module, past the usual size, because the group commit, its one-by-one retry and the
idempotency keys share one transaction's life and are easiest to check together; storage,
the decision shell and the wire schemas have their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.dispatch import Dispatcher
from vigil.clock import Clock
from vigil.db.engine import Database, is_transient
from vigil.decide.episodes import bump_firing
from vigil.decide.observations import Observation, Settled
from vigil.decide.reasons import outcome_of
from vigil.decide.recorder import Decision, count_decisions, record_observations
from vigil.errors import InvalidInput, Unavailable
from vigil.ingest.keys import Answered, SameAs, answer_keys, settle_keys
from vigil.ingest.schemas import Sample
from vigil.ingest.store import latest_values, lock_targets, store_samples
from vigil.notify.events import NotificationEvent
from vigil.observability.audit import Actor
from vigil.observability.logging import bound, get_logger
from vigil.observability.metrics import VigilMetrics
from vigil.policy.evaluator import Plan, PolicyIndex, Violation
from vigil.policy.store import PolicyCache

log = get_logger(__name__)


@dataclass(slots=True)
class IngestResult:
    """What happened to one request's samples."""

    metric_ids: list[int]
    evaluated: list[bool]
    decisions: list[Decision] = field(default_factory=list)
    answer: bytes | None = None
    """With an idempotency key: the answer's JSON body, as stored with the key."""
    replayed: bool = False
    """The key was stored before: ``answer`` is that request's, and nothing was stored."""
    status_code: int = 201
    """The status of the answer (a replayed one's as stored with its key)."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A request's ``Idempotency-Key``, the fingerprint telling its request apart from
    another sent with the same key, and how its answer's JSON body is made (stored with the
    key in the samples' transaction)."""

    key: str
    fingerprint: str
    answer: Callable[[IngestResult], bytes]


@dataclass(slots=True)
class _Request:
    samples: Sequence[Sample]
    source: str
    actor: Actor
    future: asyncio.Future[IngestResult]
    key: IdempotencyKey | None = None


class IngestPipeline:
    """Stores and evaluates samples; one writer task per process does the writing."""

    def __init__(
        self,
        *,
        database: Database,
        policies: PolicyCache,
        metrics: VigilMetrics,
        clock: Clock,
        group_size: int,
        queue_limit: int = 10_000,
        dispatcher: Dispatcher | None = None,
        key_ttl: float = 86400.0,
        wanted: frozenset[NotificationEvent] = frozenset(),
    ) -> None:
        """``wanted``: the notification events the notifications file records
        (:attr:`vigil.notify.config.Notifications.recorded`): an episode's end is told only
        when ``episode_resolved`` is one of them."""
        self._db = database
        self._wanted = wanted
        self._key_ttl = key_ttl
        self._dispatcher = dispatcher
        self._dispatching: set[asyncio.Task[None]] = set()
        self._policies = policies
        self._metrics = metrics
        self._clock = clock
        self._group_size = group_size
        # Bounded: past it a request is refused with 503 instead of queueing without end.
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue(queue_limit)
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._writer is None:
            self._stopping = False
            self._writer = asyncio.create_task(self._run(), name="vigil-ingest-writer")

    async def stop(self) -> None:
        """Refuse new requests, let the writer finish every queued one, then stop it."""
        if self._writer is None:
            return
        self._stopping = True
        await self._queue.put(None)  # after everything already queued
        await self._writer
        self._writer = None
        if self._dispatching:
            await asyncio.gather(*self._dispatching)

    async def ingest(
        self,
        samples: Sequence[Sample],
        *,
        source: str,
        actor: Actor,
        key: IdempotencyKey | None = None,
    ) -> IngestResult:
        """Store ``samples``, evaluate them and record the decisions; the result once committed.

        With ``key``: if a request with that key was stored within the key's time to live,
        nothing is stored and the result is that request's answer (``replayed``); if that
        request was another one (another fingerprint), :class:`InvalidInput`.
        """
        if self._writer is None or self._stopping:
            raise Unavailable("ingest is not running")
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Request(samples, source, actor, future, key))
        except asyncio.QueueFull:
            raise Unavailable("ingest is overloaded; retry later") from None
        return await future

    async def metric_names(self) -> frozenset[str]:
        """Every metric name an enabled policy reads, as of now: one primary-key read (the
        policy revision) while the policies did not change, so a change made by any process
        counts from the next call on."""
        async with self._db.read() as conn:
            index = await self._policies.index(conn)
        return index.metric_names

    def _take_group(self, first: _Request) -> tuple[list[_Request], bool]:
        """The next group, and whether the stop marker came after it."""
        group = [first]
        size = len(first.samples)
        while size < self._group_size and not self._queue.empty():
            request = self._queue.get_nowait()
            if request is None:
                return group, True
            group.append(request)
            size += len(request.samples)
        return group, False

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            group, stop = self._take_group(first)
            await self._handle_group(group)
            if stop:
                return

    async def _handle_group(self, group: list[_Request], tries: int = 3) -> None:
        try:
            results = await self._commit(group)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Cancelled (the process is going away): no request may wait for ever.
                for request in group:
                    if not request.future.done():
                        request.future.set_exception(Unavailable("ingest was interrupted"))
                raise
            await self._handle_failure(group, exc, tries)
            return
        stored = _deliver(group, results)
        self._report(stored)
        if self._dispatcher is not None:
            created = [d.action for _, r in stored for d in r.decisions if d.action is not None]
            if created:
                # Beside the writer, not in its way: a slow queue must not hold up ingest.
                task = asyncio.create_task(self._dispatcher.dispatch(created))
                self._dispatching.add(task)
                task.add_done_callback(self._dispatching.discard)

    async def _handle_failure(self, group: list[_Request], exc: Exception, tries: int) -> None:
        """Try a group that failed again, request by request, or fail its requests."""
        if is_transient(exc) and tries > 1:
            # A deadlock or serialisation failure: nothing was written; try again.
            log.warning("ingest.group_retried", error=repr(exc), tries_left=tries - 1)
            await self._handle_group(group, tries - 1)
        elif len(group) > 1 and not isinstance(exc, Unavailable):
            log.warning("ingest.group_split", requests=len(group), error=repr(exc))
            for request in group:
                await self._handle_group([request])
        else:
            for request in group:
                if not request.future.done():
                    request.future.set_exception(exc)

    def _report(self, stored: list[tuple[_Request, IngestResult]]) -> None:
        """Count the samples a committed group stored and log each decision it made."""
        for request, result in stored:
            self._metrics.ingest_total.labels(source=request.source).inc(len(request.samples))
            if result.decisions:
                with bound(request_id=request.actor.request_id):
                    for d in result.decisions:
                        if d.episode_action_id is not None:
                            continue  # the episode acted already: nothing was decided
                        log.info(
                            "decision.made",
                            policy=d.violation.policy.name,
                            target=d.violation.target,
                            value=d.violation.value,
                            outcome=outcome_of(d.suppressed),
                            reason=d.suppressed.value if d.suppressed is not None else None,
                            action_id=d.action.id if d.action is not None else None,
                        )

    async def _commit(self, whole: list[_Request]) -> list[IngestResult | InvalidInput]:
        """Store and evaluate a group in one transaction; each request's result (or, for a
        reused idempotency key, the error it gets), in the group's order."""
        now = self._clock.now()
        keys = [(r.key.key, r.key.fingerprint) if r.key is not None else None for r in whole]
        async with self._db.write() as conn:
            settled: list[Answered | SameAs | InvalidInput | None] = [None] * len(whole)
            if any(keys):
                forget_before = now - timedelta(seconds=self._key_ttl)
                settled = await settle_keys(conn, keys=keys, now=now, forget_before=forget_before)
            group = [r for r, early in zip(whole, settled, strict=True) if early is None]
            results = await self._store(conn, group, now) if group else []
            answers = {}
            for request, result in zip(group, results, strict=True):
                if request.key is not None:
                    result.answer = request.key.answer(result)
                    answers[request.key.key] = (result.status_code, result.answer)
            if answers:
                await answer_keys(conn, answers=answers)
        self._count(results)
        fresh = iter(results)
        stored = {i: next(fresh) for i, early in enumerate(settled) if early is None}
        return [_outcome(early, stored.get(i), stored) for i, early in enumerate(settled)]

    async def _store(
        self, conn: AsyncConnection, group: list[_Request], now: datetime
    ) -> list[IngestResult]:
        """Store and evaluate ``group``'s samples in ``conn``'s transaction; their results."""
        samples = [s for request in group for s in request.samples]
        await lock_targets(conn, targets=(s.target for s in samples if s.target is not None))
        index, firing = await self._policies.snapshot(conn)
        # Each sample's plan, found once; and the targets whose other metrics matter.
        plans = index.plans
        sample_plans: list[Plan | None] = []
        context_targets = set()
        for s in samples:
            target = s.target
            if target is None:
                sample_plans.append(None)
                continue
            plan = plans.get((s.name, target)) or index.plan(s.name, target)
            sample_plans.append(plan)
            if plan.needs_other_metrics:
                context_targets.add(target)
        known = await latest_values(conn, targets=context_targets) if context_targets else {}
        # On SQLite the samples are stored by the driver's thread while this one
        # evaluates them (evaluating needs only the values read above).
        stored = await store_samples(conn, samples=samples, now=now)
        evaluated: list[tuple[IngestResult, list[Observation]]] = []
        try:
            values_of = {t: {n: v for n, (v, _) in d.items()} for t, d in known.items()}
            stamps_of = {t: {n: ts for n, (_, ts) in d.items()} for t, d in known.items()}
            # Which pairs fire, kept up to date as the group's samples go.
            firing_now = dict(firing)
            position = 0
            for request in group:
                request_plans = sample_plans[position : position + len(request.samples)]
                position += len(request.samples)
                result = IngestResult([], [plan is not None for plan in request_plans])
                observations = self._evaluate(
                    request.samples, request_plans, values_of, stamps_of, index, firing_now
                )
                evaluated.append((result, observations))
        except BaseException:
            with contextlib.suppress(Exception):
                await stored
            raise
        ids = await stored
        results: list[IngestResult] = []
        position = 0
        firing_changed = False
        for request, (result, observations) in zip(group, evaluated, strict=True):
            count = len(request.samples)
            result.metric_ids = ids[position : position + count]
            position += count
            if observations:
                recorded = await record_observations(
                    conn,
                    observations=observations,
                    now=now,
                    actor=Actor("system", request.actor.request_id),
                    wanted=self._wanted,
                )
                result.decisions = recorded.decisions
                firing_changed |= recorded.firing_changed
            results.append(result)
        if firing_changed:
            await bump_firing(conn)
        return results

    def _evaluate(
        self,
        samples: Sequence[Sample],
        plans: list[Plan | None],
        values_of: dict[str, dict[str, float]],
        stamps_of: dict[str, dict[str, datetime]],
        index: PolicyIndex,
        firing: dict[str, frozenset[str]],
    ) -> list[Observation]:
        """Evaluate ``samples`` (with their ``plans``) against the policies reading them:
        the violations found, and the firing pairs a sample shows to have resolved.

        ``values_of`` and ``stamps_of`` hold the latest value and timestamp of each metric
        of every target whose other metrics matter; they are kept up to date as the
        samples go, so a later sample of a target sees the earlier ones. ``firing``
        holds the policies firing for each target, kept up to date too.
        """
        observations: list[Observation] = []
        evaluations = 0
        for sample, plan in zip(samples, plans, strict=True):
            target = sample.target
            if plan is None or target is None or not plan.candidates:
                continue
            evaluations += len(plan.candidates)
            value = sample.value
            # Whether no candidate can hold with this value (the plan's guard).
            quiet = not plan.unguarded and plan.below <= value <= plan.above
            firing_here = firing.get(target)
            values = values_of.get(target)
            if values is None:
                if quiet and firing_here is None:
                    continue
                values = {sample.name: value}
            else:
                # The target's latest values, this sample included (and kept for later ones).
                stamps = stamps_of[target]
                name = sample.name
                seen = stamps.get(name)
                if seen is None or sample.ts >= seen:
                    stamps[name] = sample.ts
                    values[name] = value
                else:
                    # An older sample: judged with its own value, the newer one kept.
                    values = {**values, name: value}
            found = [] if quiet else plan.evaluate(target, value, values, sample.tags)
            if firing_here is not None:
                firing_here = _settle(
                    plan, target, firing_here, found, values, sample.tags, index, observations
                )
                firing[target] = firing_here
            if found:
                observations.extend(found)
                firing[target] = (firing_here or frozenset()) | {v.policy.name for v in found}
        if evaluations:
            self._metrics.policy_evaluations_total.inc(evaluations)
        return observations

    def _count(self, results: list[IngestResult]) -> None:
        for result in results:
            count_decisions(self._metrics, result.decisions)


def _settle(
    plan: Plan,
    target: str,
    firing: frozenset[str],
    found: list[Violation],
    values: Mapping[str, float],
    tags: Mapping[str, str],
    index: PolicyIndex,
    observations: list[Observation],
) -> frozenset[str]:
    """Append to ``observations`` the firing pairs of ``plan``'s candidates that a sample
    shows resolved (their condition did not hold, their ``clear`` condition, if any, does);
    return the policies still firing for ``target``."""
    held = {v.policy.name for v in found}
    for policy in plan.candidates:
        name = policy.name
        if name not in firing or name in held:
            continue
        if policy.clear is not None:
            clear = index.clears[name]
            if clear is None or not clear(values, tags):
                continue
        observations.append(Settled(policy, target))
        firing = firing - {name}
    return firing


def _deliver(
    group: list[_Request], results: list[IngestResult | InvalidInput]
) -> list[tuple[_Request, IngestResult]]:
    """Answer each request of a committed group; the requests whose samples were stored."""
    stored: list[tuple[_Request, IngestResult]] = []
    for request, result in zip(group, results, strict=True):
        if isinstance(result, IngestResult) and not result.replayed:
            stored.append((request, result))
        if request.future.done():
            continue
        if isinstance(result, Exception):
            request.future.set_exception(result)
        else:
            request.future.set_result(result)
    return stored


def _outcome(
    early: Answered | SameAs | InvalidInput | None,
    result: IngestResult | None,
    stored: dict[int, IngestResult],
) -> IngestResult | InvalidInput:
    """A request's outcome: its ``result`` if it was stored, else what its key settled."""
    if early is None:
        assert result is not None
        return result
    if isinstance(early, SameAs):
        return IngestResult([], [], answer=stored[early.index].answer, replayed=True)
    if isinstance(early, Answered):
        return IngestResult([], [], answer=early.body, replayed=True, status_code=early.status_code)
    return early
