"""The notification sender: routes each notification to its channels and delivers it.

Every ``interval`` seconds, and as soon as a transaction of this process that recorded a
notification commits, the sender claims the notifications that are due -- a compare-and-set
on their due time, pushed ``timeout`` + a margin ahead, so processes share the work and never
send one notification at the same time -- and, for each, asks the routes
(:meth:`~vigil.notify.config.Notifications.routed`) which channels it goes to. Each channel
that has not taken it yet gets it:

- at once, as a message of its own;
- or, on a route with ``group_wait``, held until its group is due (the group's first event
  plus ``group_wait``; after the group last went out, that time plus ``group_interval``),
  then sent in one message with every other held event of the group;
- or not at all when the same event about the same policy and target went to the channel
  within the route's ``repeat_interval`` (recorded as skipped).

The outcome is recorded per channel: ``delivered`` once every channel took it (or skipped
it), else another try after an exponential backoff with jitter, and ``failed`` after the
last attempt, with each far side's answer in ``last_error``. A sender that dies mid-try
leaves its claim to expire and the notification is sent again: delivery is at least once.

Messages about one action on one channel go out in order, and each after the first refers
to the first (:class:`~vigil.notify.channels.base.Thread`): Slack answers in its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.errors import Unavailable
from vigil.notify import store
from vigil.notify.channels.base import Channel, DeliveryFailed, Message, Thread, links
from vigil.notify.config import Notifications, Route, Subject
from vigil.notify.events import DeliveryStatus
from vigil.notify.store import Mark, Notification
from vigil.observability.metrics import VigilMetrics
from vigil.worker.backoff import RetryPolicy

log = logging.getLogger(__name__)

CLAIM_MARGIN_SECONDS = 30.0
"""How much longer than one request's timeout a claim lasts: a try that outlives it (the
process stalled) may be sent again by another process."""


def subject(record: Notification) -> Subject:
    """What routes match ``record`` on."""
    return Subject(
        event=record.event,
        severity=record.severity,
        policy=record.policy_name,
        target=record.target,
        tags=record.tags or {},
    )


def group_key(route: Route, channel: str) -> str:
    return f"group:{route.key}:{channel}"


def repeat_key(route: Route, channel: str, record: Notification) -> str:
    about = "\x00".join((record.event, record.policy_name or "", record.target or ""))
    digest = hashlib.sha256(about.encode()).hexdigest()[:32]
    return f"repeat:{route.key}:{channel}:{digest}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A notification's delivery state after one pass."""

    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    deliveries: dict[str, Any] | None


@dataclass(slots=True)
class _Send:
    """One message to one channel: which notifications, and through which route."""

    channel: str
    route: Route
    records: list[Notification]


@dataclass(slots=True)
class _Plan:
    """What one pass does with the notifications it claimed."""

    sends: list[_Send] = field(default_factory=list)
    held: dict[int, dict[str, datetime]] = field(default_factory=dict)
    """Per notification id: channels held back for their group, each until when."""
    skipped: dict[int, list[str]] = field(default_factory=dict)
    """Per notification id: channels skipped as a repeat."""
    routed: dict[int, list[str]] = field(default_factory=dict)
    """Per notification id: every channel its routes send it to."""
    marks: dict[str, Mark] = field(default_factory=dict)
    """Marks to write: groups made due."""
    known: dict[str, Mark] = field(default_factory=dict)
    """The marks as read (and as planned) for this pass."""


def _entry(deliveries: Mapping[str, Any], channel: str) -> dict[str, Any]:
    return dict(deliveries.get(channel) or {})


def _holds(send: _Send, record: Notification) -> bool:
    return any(r.id == record.id for r in send.records)


def _done(entry: Mapping[str, Any]) -> bool:
    return bool(entry.get("delivered_at") or entry.get("skipped"))


class Notifier:
    """Sends due notifications every ``interval`` seconds (and when woken) until stopped."""

    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        metrics: VigilMetrics,
        notifications: Notifications,
        channels: Mapping[str, Channel],
        timeout: float,
        retry: RetryPolicy,
        interval: float,
        external_url: str | None = None,
        batch: int = 50,
        rng: random.Random | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._metrics = metrics
        self.notifications = notifications
        self.channels = dict(channels)
        self._timeout = timeout
        self._retry = retry
        self._interval = interval
        self._external_url = external_url
        self._batch = batch
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._ran = asyncio.Condition()
        self.passes = 0

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping.clear()
        engine = self._db.engine.sync_engine
        event.listen(engine, "commit", self._committed)
        event.listen(engine, "rollback", self._rolled_back)
        self._task = asyncio.create_task(self._run(), name="vigil-notifier")

    async def stop(self) -> None:
        """Stop after the pass under way (its requests end within the timeout)."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        await self._task
        self._task = None
        engine = self._db.engine.sync_engine
        event.remove(engine, "commit", self._committed)
        event.remove(engine, "rollback", self._rolled_back)

    async def aclose(self) -> None:
        """Stop, and release what the channels hold."""
        await self.stop()
        for channel in self.channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()

    def wake(self) -> None:
        """Run a pass now instead of at the end of the interval."""
        self._wake.set()

    def _committed(self, conn: Connection) -> None:
        if conn.info.pop(store.RECORDED, False):
            self.wake()

    def _rolled_back(self, conn: Connection) -> None:
        # A lost connection (invalidated) must not be touched: its ``info`` would reconnect,
        # failing in place of the error that says the database is unavailable. The pool
        # clears its ``info`` when it connects afresh.
        if not conn.invalidated:
            conn.info.pop(store.RECORDED, None)

    async def wait_for_passes(self, count: int) -> None:
        """Return once at least ``count`` passes of the loop have finished."""
        async with self._ran:
            await self._ran.wait_for(lambda: self.passes >= count)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                while await self.run_once() >= self._batch and not self._stopping.is_set():
                    pass  # a full batch: more may be due
            except Unavailable as exc:
                log.warning("notifier: %s", exc)
            except Exception:
                # Never let a surprise end the loop: notifications would pile up unsent.
                log.exception("notifier: pass failed")
            async with self._ran:
                self.passes += 1
                self._ran.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    # -- one pass -----------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim the due notifications and route, hold, skip or send each once; how many
        were claimed (or, with no channel configured, marked ``none``)."""
        now = self._clock.now()
        if not self.channels:
            async with self._db.write() as conn:
                unsendable = await store.settle_unsendable(conn, now=now)
            for name in unsendable:
                self._count(name, "", "none")
            return len(unsendable)
        until = now + timedelta(seconds=self._timeout + CLAIM_MARGIN_SECONDS)
        async with self._db.write() as conn:
            claimed = await store.claim_due(conn, now=now, until=until, limit=self._batch)
            if not claimed:
                return 0
            plan = await self._plan(conn, claimed, now)
            threads = await self._threads(conn, claimed, plan)
        answers = await self._deliver(plan, threads)
        now = self._clock.now()
        outcomes, marks = self._outcomes(claimed, plan, answers, now)
        async with self._db.write() as conn:
            for record in claimed:
                result = outcomes[record.id]
                recorded = await store.record_attempt(
                    conn,
                    notification_id=record.id,
                    claimed_until=until,
                    status=result.status,
                    attempts=result.attempts,
                    next_attempt_at=result.next_attempt_at,
                    last_error=result.last_error,
                    delivered_at=result.delivered_at,
                    deliveries=result.deliveries,
                )
                if not recorded:
                    log.warning("notifier: claim on notification %s was lost", record.id)
            await store.write_marks(conn, {**plan.marks, **marks})
        for record in claimed:
            self._report(record, outcomes[record.id], plan, answers)
        return len(claimed)

    async def _plan(self, conn: Any, claimed: Sequence[Notification], now: datetime) -> _Plan:
        """Which channel each claimed notification goes to now, which wait for their
        group, which are skipped as repeats."""
        plan = _Plan()
        wanted: list[tuple[Notification, Route, str]] = []
        for record in claimed:
            deliveries = record.deliveries or {}
            routes = [
                (route, channel)
                for route, channel in self.notifications.routed(subject(record))
                if channel in self.channels
            ]
            plan.routed[record.id] = [channel for _, channel in routes]
            wanted.extend(
                (record, route, channel)
                for route, channel in routes
                if not _done(_entry(deliveries, channel))
            )
        keys = {repeat_key(r, c, n) for n, r, c in wanted if r.repeat_interval is not None}
        keys |= {group_key(r, c) for _, r, c in wanted if r.grouped}
        marks = plan.known = await store.read_marks(conn, keys)
        singles: list[_Send] = []
        groups: dict[str, _Send] = {}
        for record, route, channel in wanted:
            if route.repeat_interval is not None:
                last = marks.get(repeat_key(route, channel, record))
                sent_at = None if last is None else last.sent_at
                if sent_at is not None and (now - sent_at).total_seconds() < route.repeat_interval:
                    plan.skipped.setdefault(record.id, []).append(channel)
                    continue
            if not route.grouped:
                singles.append(_Send(channel, route, [record]))
                continue
            key = group_key(route, channel)
            due = self._group_due(marks.get(key), route, record, now)
            if key not in marks or marks[key].due_at != due:
                mark = Mark(due_at=due, sent_at=(marks.get(key) or Mark()).sent_at)
                marks[key] = plan.marks[key] = mark
            if due > now:
                plan.held.setdefault(record.id, {})[channel] = due
                continue
            groups.setdefault(key, _Send(channel, route, [])).records.append(record)
        plan.sends = singles + list(groups.values())
        return plan

    @staticmethod
    def _group_due(
        mark: Mark | None, route: Route, record: Notification, now: datetime
    ) -> datetime:
        """When ``record``'s group on a grouped route goes out: the time already set for
        the group's held events; else ``group_interval`` after the group last went out,
        if that is still ahead; else ``group_wait`` after this, its first event."""
        if mark is not None and mark.due_at is not None:
            return mark.due_at
        if mark is not None and mark.sent_at is not None and route.group_interval is not None:
            after = mark.sent_at + timedelta(seconds=route.group_interval)
            if after > now:
                return after
        return record.at + timedelta(seconds=route.group_wait or 0.0)

    async def _threads(
        self, conn: Any, claimed: Sequence[Notification], plan: _Plan
    ) -> dict[tuple[int, str], Thread]:
        """Per (action id, channel) of the messages to send: the first earlier message on
        that channel about the action, if one went out."""
        actions = {
            record.action_id
            for send in plan.sends
            for record in send.records
            if record.action_id is not None
        }
        if not actions:
            return {}
        threads: dict[tuple[int, str], Thread] = {}
        for earlier in await store.about_actions(conn, action_ids=actions):
            assert earlier.action_id is not None
            for channel, entry in (earlier.deliveries or {}).items():
                ref = (entry or {}).get("ref")
                if ref and (earlier.action_id, channel) not in threads:
                    threads[(earlier.action_id, channel)] = Thread(ref=ref, origin=earlier)
        return threads

    async def _deliver(
        self, plan: _Plan, threads: dict[tuple[int, str], Thread]
    ) -> dict[int, tuple[str | None, dict[int, dict[str, Any]]]]:
        """Send each planned message; per index in ``plan.sends``: the error (``None``
        when taken) and what the channel gave back per notification.

        Messages about one action on one channel go one after another, in the order
        recorded, so a later one can continue the thread the first one started; the rest
        go at once."""
        chains: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, send in enumerate(plan.sends):
            action = send.records[0].action_id if len(send.records) == 1 else None
            chain = f"action {action}" if action is not None else f"message {index}"
            chains[(send.channel, chain)].append(index)
        answers: dict[int, tuple[str | None, dict[int, dict[str, Any]]]] = {}

        async def run(chain: list[int]) -> None:
            for index in sorted(chain, key=lambda i: plan.sends[i].records[0].id):
                send = plan.sends[index]
                answers[index] = await self._send_one(send, threads)
                refs = answers[index][1]
                for record in send.records:
                    ref = refs.get(record.id)
                    key = (record.action_id or 0, send.channel)
                    if ref and record.action_id is not None and key not in threads:
                        threads[key] = Thread(ref=ref, origin=record)

        await asyncio.gather(*(run(chain) for chain in chains.values()))
        return answers

    async def _send_one(
        self, send: _Send, threads: Mapping[tuple[int, str], Thread]
    ) -> tuple[str | None, dict[int, dict[str, Any]]]:
        channel = self.channels[send.channel]
        message = Message(
            notifications=tuple(send.records),
            links={r.id: links(r, self._external_url) for r in send.records},
            threads={
                r.id: threads[(r.action_id, send.channel)]
                for r in send.records
                if r.action_id is not None
                and (r.action_id, send.channel) in threads
                and threads[(r.action_id, send.channel)].origin.id != r.id
            },
        )
        try:
            async with asyncio.timeout(self._timeout * 2 + 1):
                return None, await channel.send(message)
        except DeliveryFailed as exc:
            return str(exc) or "refused", {}
        except TimeoutError:
            return f"timed out after {self._timeout * 2 + 1:g}s", {}
        except Exception as exc:
            log.exception("notifier: channel %s failed unexpectedly", send.channel)
            return f"{type(exc).__name__}: unexpected failure (see the logs)", {}

    def _outcomes(
        self,
        claimed: Sequence[Notification],
        plan: _Plan,
        answers: Mapping[int, tuple[str | None, dict[int, dict[str, Any]]]],
        now: datetime,
    ) -> tuple[dict[int, Outcome], dict[str, Mark]]:
        """Each claimed notification's state after the pass, and the marks to write."""
        tried: dict[int, dict[str, tuple[str | None, dict[str, Any] | None]]] = defaultdict(dict)
        marks: dict[str, Mark] = {}
        retry_at: dict[int, datetime] = {}
        for index, send in enumerate(plan.sends):
            error, refs = answers[index]
            for record in send.records:
                tried[record.id][send.channel] = (error, refs.get(record.id))
            if send.route.grouped:
                key = group_key(send.route, send.channel)
                if error is None:
                    marks[key] = Mark(due_at=None, sent_at=now)
                else:
                    # The group tries again as one: every member is due at the same time,
                    # and so is what joins the group meanwhile.
                    delay = self._retry.delay(max(r.attempts for r in send.records) + 1, self._rng)
                    again = now + timedelta(seconds=delay)
                    before = plan.known.get(key) or Mark()
                    marks[key] = Mark(due_at=again, sent_at=before.sent_at)
                    for record in send.records:
                        retry_at[record.id] = again
            if error is None and send.route.repeat_interval is not None:
                for record in send.records:
                    marks[repeat_key(send.route, send.channel, record)] = Mark(sent_at=now)
        outcomes = {}
        for record in claimed:
            outcomes[record.id] = self._outcome(
                record,
                tried.get(record.id, {}),
                plan,
                now,
                retry_at.get(record.id),
            )
        return outcomes, marks

    def _outcome(
        self,
        record: Notification,
        tried: Mapping[str, tuple[str | None, dict[str, Any] | None]],
        plan: _Plan,
        now: datetime,
        group_retry_at: datetime | None,
    ) -> Outcome:
        routed = plan.routed.get(record.id, [])
        if not routed:
            return Outcome(
                DeliveryStatus.NONE, record.attempts, None, None, None, record.deliveries
            )
        deliveries: dict[str, Any] = dict(record.deliveries or {})
        for channel in plan.skipped.get(record.id, []):
            deliveries[channel] = {
                **self._base(record, channel),
                "skipped": "repeat",
                "held_until": None,
            }
        for channel, until in plan.held.get(record.id, {}).items():
            deliveries[channel] = {**self._base(record, channel), "held_until": until.isoformat()}
        for channel, (error, ref) in tried.items():
            before = self._base(record, channel)
            deliveries[channel] = {
                **before,
                "attempts": int(before.get("attempts", 0)) + 1,
                "last_error": error,
                "delivered_at": None if error else now.isoformat(),
                "held_until": None,
                **({"ref": ref} if ref else {}),
            }
        attempts = record.attempts + (1 if tried else 0)
        if all(_done(_entry(deliveries, channel)) for channel in routed):
            return Outcome(DeliveryStatus.DELIVERED, attempts, None, None, now, deliveries)
        errors = [f"{channel}: {error}" for channel, (error, _) in tried.items() if error]
        error_text = "; ".join(errors) or record.last_error
        held = list(plan.held.get(record.id, {}).values())
        if errors and self._retry.exhausted(attempts):
            return Outcome(DeliveryStatus.FAILED, attempts, None, error_text, None, deliveries)
        due = []
        if errors:
            due.append(
                group_retry_at or now + timedelta(seconds=self._retry.delay(attempts, self._rng))
            )
        due.extend(held)
        next_at = min(due) if due else now
        return Outcome(DeliveryStatus.PENDING, attempts, next_at, error_text, None, deliveries)

    def _base(self, record: Notification, channel: str) -> dict[str, Any]:
        """A channel's delivery entry as it stood, with its name and type."""
        entry = _entry(record.deliveries or {}, channel)
        entry.setdefault("attempts", 0)
        entry.setdefault("last_error", None)
        entry.setdefault("delivered_at", None)
        found = self.channels.get(channel)
        entry["channel"] = channel
        entry["type"] = found.type if found is not None else entry.get("type")
        return entry

    def _count(self, event_name: str, channel: str, result: str) -> None:
        self._metrics.notifications_total.labels(
            event=event_name, channel=channel, result=result
        ).inc()

    def _report(
        self,
        record: Notification,
        result: Outcome,
        plan: _Plan,
        answers: Mapping[int, tuple[str | None, dict[int, dict[str, Any]]]],
    ) -> None:
        if result.status is DeliveryStatus.NONE:
            self._count(record.event, "", "none")
            return
        for channel in plan.skipped.get(record.id, []):
            self._count(record.event, channel, "skipped")
        for channel in plan.held.get(record.id, {}):
            self._count(record.event, channel, "held")
        for index, send in enumerate(plan.sends):
            if not _holds(send, record):
                continue
            error = answers[index][0]
            if error is None:
                outcome_label = "delivered"
            elif result.status is DeliveryStatus.FAILED:
                outcome_label = "failed"
            else:
                outcome_label = "retrying"
            self._count(record.event, send.channel, outcome_label)
        if result.status is DeliveryStatus.FAILED:
            log.error(
                "notifier: notification %s (%s) not delivered after %d attempts: %s",
                record.id,
                record.event,
                result.attempts,
                result.last_error,
            )
        elif (
            result.status is DeliveryStatus.PENDING
            and result.last_error
            and any(
                answers[i][0]
                for i, s in enumerate(plan.sends)
                if any(r.id == record.id for r in s.records)
            )
        ):
            log.warning(
                "notifier: notification %s (%s) attempt %d failed, retrying at %s: %s",
                record.id,
                record.event,
                result.attempts,
                result.next_attempt_at.isoformat() if result.next_attempt_at else "?",
                result.last_error,
            )
