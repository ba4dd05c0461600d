"""Alertmanager's notifications in: store each alert and hand what it changes to the
decision core, in one transaction.

A firing alert matching an ``alert`` policy is a :class:`~vigil.policy.evaluator.Violation`
(value None, the alert's other labels as tags) when its pair is not firing yet; a resolved
one is a :class:`~vigil.decide.observations.Settled` when no other firing alert still holds
the pair. A notification re-sent (Alertmanager's ``repeat_interval``, its retries) finds its
alerts stored and its pairs firing: it decides nothing, unless a silence, the pause or
another guard that lifts held its episode back (then it is tried again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.dispatch import Dispatcher
from vigil.alerts import store
from vigil.alerts.matching import Match, alert_matches, alert_target, matches, usable
from vigil.alerts.schemas import AlertIn
from vigil.clock import Clock
from vigil.db.engine import Database, is_transient
from vigil.decide import episodes
from vigil.decide.observations import Observation, Settled
from vigil.decide.reasons import LIFTING, outcome_of
from vigil.decide.recorder import Decision, count_decisions, record_observations
from vigil.decide.state import Phase
from vigil.ingest.labels import target_of
from vigil.ingest.store import lock_targets
from vigil.notify.events import NotificationEvent
from vigil.observability.audit import Actor
from vigil.observability.logging import bound, get_logger
from vigil.observability.metrics import VigilMetrics
from vigil.policy.evaluator import Violation
from vigil.policy.models import AlertCondition
from vigil.policy.store import PolicyCache

log = get_logger(__name__)

Pair = tuple[str, str]


@dataclass(slots=True)
class AlertResult:
    """What one alert of a notification did."""

    alert: AlertIn
    target: str | None
    new: bool
    """Whether the alert (fingerprint, ``startsAt``) was heard of for the first time."""
    ended: bool = False
    """Whether it was heard of before and had ended (resolved, or stale)."""
    decisions: list[Decision] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    """The policies whose episode for the alert's target it resolved."""


class AlertReceiver:
    """Stores Alertmanager's alerts and records what they decide."""

    def __init__(
        self,
        *,
        database: Database,
        metrics: VigilMetrics,
        clock: Clock,
        dispatcher: Dispatcher | None = None,
        wanted: frozenset[NotificationEvent] = frozenset(),
    ) -> None:
        """``wanted``: the notification events the notifications file records
        (:attr:`vigil.notify.config.Notifications.recorded`): an episode's end is told only
        when ``episode_resolved`` is one of them."""
        self._db = database
        self._wanted = wanted
        self._metrics = metrics
        self._clock = clock
        self._dispatcher = dispatcher
        self._policies = PolicyCache()

    async def receive(self, alerts: Sequence[AlertIn], *, actor: Actor) -> list[AlertResult]:
        """Store ``alerts`` and record their decisions; what each did, in their order."""
        for tries_left in (2, 1, 0):
            try:
                results, decisions = await self._commit(alerts, actor)
                break
            except DBAPIError as exc:
                # A deadlock or serialisation failure (PostgreSQL): nothing was written.
                if not is_transient(exc) or not tries_left:
                    raise
                log.warning("alerts.retried", error=repr(exc), tries_left=tries_left)
        self._report(decisions, actor)
        if self._dispatcher is not None:
            await self._dispatcher.dispatch(d.action for d in decisions if d.action is not None)
        return results

    async def _commit(
        self, alerts: Sequence[AlertIn], actor: Actor
    ) -> tuple[list[AlertResult], list[Decision]]:
        now = self._clock.now()
        # One order for every writer: the alerts' rows (by fingerprint and startsAt, as the
        # runner marks them stale), then the targets; so no two can deadlock.
        order = sorted(range(len(alerts)), key=lambda i: (alerts[i].fingerprint, alerts[i].starts))
        results: dict[int, AlertResult] = {}
        async with self._db.write() as conn:
            index = await self._policies.index(conn)
            for i in order:
                alert = alerts[i]
                target = usable(target_of(alert.labels))
                before = await store.record_alert(conn, alert=alert, target=target, now=now)
                result = AlertResult(alert, target, new=before is None)
                result.ended = before in (store.RESOLVED, store.STALE)
                results[i] = result
            found = {i: matches(index.alerts, alerts[i].labels) for i in order}
            await lock_targets(conn, targets=(m.target for ms in found.values() for m in ms))
            pairs = {(m.policy.name, m.target) for ms in found.values() for m in ms}
            stored = await episodes.load(conn, pairs=pairs)
            firing = {p for p, e in stored.items() if e.phase.phase is Phase.FIRING}
            held = {p for p in firing if not stored[p].acted and stored[p].reason in LIFTING}
            observations: list[Observation] = []
            owners: dict[int, AlertResult] = {}
            live: dict[str, list[dict[str, str]]] = {}  # firing alerts' labels, by alertname
            for i in order:
                result = results[i]
                if result.alert.status == store.FIRING and not result.ended:
                    for v in _fire(found[i], firing, held):
                        owners[id(v)] = result
                        observations.append(v)
                elif result.alert.status == store.RESOLVED:
                    for s in await _settle(conn, found[i], firing, live):
                        result.resolved.append(s.policy.name)
                        observations.append(s)
            decisions: list[Decision] = []
            if observations:
                recorded = await record_observations(
                    conn,
                    observations=observations,
                    now=now,
                    actor=Actor("system", actor.request_id),
                    wanted=self._wanted,
                )
                for d in recorded.decisions:
                    owners[id(d.violation)].decisions.append(d)
                decisions = recorded.decisions
                if recorded.firing_changed:
                    await episodes.bump_firing(conn)
        return [results[i] for i in range(len(alerts))], decisions

    def _report(self, decisions: list[Decision], actor: Actor) -> None:
        count_decisions(self._metrics, decisions)
        with bound(request_id=actor.request_id):
            for d in decisions:
                log.info(
                    "decision.made",
                    source="alertmanager",
                    policy=d.violation.policy.name,
                    target=d.violation.target,
                    outcome=outcome_of(d.suppressed),
                    reason=d.suppressed.value if d.suppressed is not None else None,
                    action_id=d.action.id if d.action is not None else None,
                )


def _fire(found: list[Match], firing: set[Pair], held: set[Pair]) -> list[Violation]:
    """A violation for each matched pair not firing yet (now counted as firing), and for
    each firing pair whose attempt to act a guard that lifts held back (tried once more)."""
    fired = []
    for m in found:
        pair = (m.policy.name, m.target)
        if pair not in firing or pair in held:
            firing.add(pair)
            held.discard(pair)
            fired.append(Violation(m.policy, m.target, None, m.tags))
    return fired


async def _settle(
    conn: AsyncConnection,
    found: list[Match],
    firing: set[Pair],
    live: dict[str, list[dict[str, str]]],
) -> list[Settled]:
    """A settlement for each matched pair firing that no firing alert holds any more
    (``live``: the firing alerts' labels by alertname, read once per notification)."""
    settled = []
    for m in found:
        pair = (m.policy.name, m.target)
        if pair not in firing:
            continue
        condition = m.policy.condition
        assert isinstance(condition, AlertCondition)
        name = condition.alertname
        if name not in live:
            live[name] = await store.firing_labels(conn, alertnames=[name])
        still = [
            labels
            for labels in live[name]
            if alert_matches(condition, labels) and alert_target(m.policy, labels) == m.target
        ]
        if not still:
            firing.discard(pair)
            settled.append(Settled(m.policy, m.target))
    return settled
