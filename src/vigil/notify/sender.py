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

MARKS_PRUNED_EVERY_SECONDS = 3600.0
"""How often a sender forgets marks nothing needs any more."""
MARKS_KEPT_AT_LEAST_SECONDS = 86400.0
"""How long a mark is kept at least after its last send (longer when a route's interval is)."""

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


OrderKey = tuple[str, str, str, int] | tuple[str, int]
_GroupEnd = tuple[datetime | None, datetime | None, datetime | None]
"""How a group's try ended: the due time it went at, when it went out, its next due time."""


def order_key(record: Notification) -> OrderKey | None:
    """What ``record``'s messages must keep their order within, on each channel: its
    episode (a page's trigger before its resolve), else its action (a thread's first
    message before its replies); ``None`` when it has neither."""
    if record.episode is not None and record.policy_name and record.target:
        return ("episode", record.policy_name, record.target, record.episode)
    if record.action_id is not None:
        return ("action", record.action_id)
    return None


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
    due_at: datetime | None = None
    """A group's: the due time it goes at."""


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one message's send came to: the error (``None`` when taken), the refs the
    channel gave back, and which of its notifications went out (all, when taken; those a
    failure names as taken, else none)."""

    error: str | None
    refs: Mapping[int, dict[str, Any]] = field(default_factory=dict)
    taken: frozenset[int] = frozenset()


@dataclass(slots=True)
class _Plan:
    """What one pass does with the notifications it claimed."""

    sends: list[_Send] = field(default_factory=list)
    held: dict[int, dict[str, datetime]] = field(default_factory=dict)
    """Per notification id: channels held back (for their group, or behind an earlier
    message about the same episode or action, or a repeat being sent), each until when."""
    skipped: dict[int, list[str]] = field(default_factory=dict)
    """Per notification id: channels skipped as a repeat."""
    routed: dict[int, list[str]] = field(default_factory=dict)
    """Per notification id: every channel its routes send it to."""
    known: dict[str, Mark] = field(default_factory=dict)
    """The marks as read (and as planned) for this pass."""
    records: dict[int, Notification] = field(default_factory=dict)
    """The claimed notifications, by id."""
    grouped: set[tuple[int, str]] = field(default_factory=set)
    """(notification id, channel) held for its route's group (the rest wait for a retry or
    behind an earlier message)."""

    def hold(self, record: Notification, channel: str, until: datetime) -> None:
        held = self.held.setdefault(record.id, {})
        held[channel] = min(held.get(channel, until), until)

    def next_pass_at_once(self, now: datetime) -> bool:
        """Whether something waits only for this pass to end (behind a message it sends)."""
        return any(until <= now for held in self.held.values() for until in held.values())


def _entry(deliveries: Mapping[str, Any], channel: str) -> dict[str, Any]:
    return dict(deliveries.get(channel) or {})


def _holds(send: _Send, record: Notification) -> bool:
    return any(r.id == record.id for r in send.records)


def _taken(entry: Mapping[str, Any]) -> bool:
    """The channel has it, or was meant to skip it."""
    return bool(entry.get("delivered_at") or entry.get("skipped"))


def _time(value: object) -> datetime | None:
    """A time kept in a delivery entry (ISO 8601 text), or ``None``."""
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _settled(entry: Mapping[str, Any]) -> bool:
    """Nothing more will be tried on the channel: taken, or given up."""
    return _taken(entry) or bool(entry.get("failed_at"))


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
        self._pruned_at: datetime | None = None

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
                await self.prune_marks()
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

    async def prune_marks(self, *, force: bool = False) -> int:
        """Forget the group and repeat marks no route can need any more -- nothing waits for
        them and they last went out longer ago than any route's interval (and a day) -- at
        most once every :data:`MARKS_PRUNED_EVERY_SECONDS` unless ``force``; how many."""
        now = self._clock.now()
        last = self._pruned_at
        if (
            not force
            and last is not None
            and (now - last).total_seconds() < MARKS_PRUNED_EVERY_SECONDS
        ):
            return 0
        self._pruned_at = now
        longest = max(
            [MARKS_KEPT_AT_LEAST_SECONDS]
            + [
                interval
                for route in self.notifications.routes
                for interval in (route.group_wait, route.group_interval, route.repeat_interval)
                if interval is not None
            ]
        )
        async with self._db.write() as conn:
            return await store.prune_marks(conn, before=now - timedelta(seconds=longest))

    # -- one pass -----------------------------------------------------------------------------

    @property
    def _send_limit(self) -> float:
        """How long one message may take, whatever the channel (an SMTP conversation or a
        Slack thread reply and update are several requests)."""
        return self._timeout * 2 + 1

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
        until = now + timedelta(seconds=self._send_limit + CLAIM_MARGIN_SECONDS)
        async with self._db.write() as conn:
            claimed = await store.claim_due(conn, now=now, until=until, limit=self._batch)
            if not claimed:
                return 0
            plan = await self._plan(conn, claimed, now)
            threads = await self._threads(conn, plan)
        answers = await self._deliver(plan, threads)
        now = self._clock.now()
        outcomes, marks, groups = self._outcomes(claimed, plan, answers, now)
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
            await store.write_marks(conn, marks)
            for key, (due_at, sent_at, next_due) in sorted(groups.items()):
                await store.end_group(
                    conn, key=key, due_at=due_at, sent_at=sent_at, next_due=next_due
                )
        for record in claimed:
            self._report(record, outcomes[record.id], plan, answers)
        if plan.next_pass_at_once(now):
            self.wake()  # what waited behind a message sent this pass goes next
        return len(claimed)

    async def _plan(self, conn: Any, claimed: Sequence[Notification], now: datetime) -> _Plan:
        """Which channel each claimed notification goes to now, which wait (for their
        group, or behind an earlier message about the same episode or action), which are
        skipped as repeats."""
        plan = _Plan(records={record.id: record for record in claimed})
        wanted = self._wanted(claimed, plan, now)
        wanted = await self._behind_earlier(conn, claimed, wanted, plan, now)
        keys = {repeat_key(r, c, n) for n, r, c in wanted if r.repeat_interval is not None}
        keys |= {group_key(r, c) for _, r, c in wanted if r.grouped}
        marks = plan.known = await store.read_marks(conn, keys)
        singles: list[_Send] = []
        groups: dict[str, _Send] = {}
        repeating: set[str] = set()
        for record, route, channel in wanted:
            if route.repeat_interval is not None:
                key = repeat_key(route, channel, record)
                last = marks.get(key)
                sent_at = None if last is None else last.sent_at
                if sent_at is not None and (now - sent_at).total_seconds() < route.repeat_interval:
                    plan.skipped.setdefault(record.id, []).append(channel)
                    continue
                if key in repeating:
                    # The same event is going out this pass: once it has, this one is a
                    # repeat (or, should that send fail, the one to try).
                    plan.hold(record, channel, now)
                    continue
                repeating.add(key)
            if not route.grouped:
                singles.append(_Send(channel, route, [record]))
                continue
            key = group_key(route, channel)
            if key in groups:  # the group goes this pass: this one goes with it
                groups[key].records.append(record)
                continue
            known = marks.get(key) or Mark()
            due = self._group_due(known, route, record, now)
            if known.due_at != due:
                due = await store.start_group(conn, key=key, due_at=due, since=record.at)
                marks[key] = Mark(due_at=due, sent_at=known.sent_at)
            if due > now:
                plan.hold(record, channel, due)
                plan.grouped.add((record.id, channel))
                continue
            groups[key] = _Send(channel, route, [record], due_at=due)
        plan.sends = self._in_order(singles + list(groups.values()), plan, now)
        return plan

    @staticmethod
    def _in_order(sends: list[_Send], plan: _Plan, now: datetime) -> list[_Send]:
        """``sends`` with at most the earliest notification about each episode or action
        going to each channel this pass, and none whose earlier one waits: the others
        wait -- behind a held one until it is released, behind one sent now until the next
        pass, which comes at once. So a page's resolve never overtakes its trigger, and a
        thread's replies follow its first message."""
        waiting: dict[tuple[OrderKey, str], tuple[int, datetime]] = {}
        for notification_id, held in sorted(plan.held.items()):
            record = plan.records.get(notification_id)
            key = None if record is None else order_key(record)
            if key is None:
                continue
            for channel, until in held.items():
                waiting.setdefault((key, channel), (notification_id, until))
        going: set[tuple[OrderKey, str]] = set()
        stays: dict[int, list[Notification]] = {i: [] for i in range(len(sends))}
        members = sorted(
            ((record, index) for index, send in enumerate(sends) for record in send.records),
            key=lambda item: item[0].id,
        )
        for record, index in members:
            channel = sends[index].channel
            key = order_key(record)
            if key is not None:
                earlier = waiting.get((key, channel))
                if earlier is not None and earlier[0] < record.id:
                    plan.hold(record, channel, max(earlier[1], now))
                    continue
                if (key, channel) in going:
                    plan.hold(record, channel, now)
                    continue
                going.add((key, channel))
            stays[index].append(record)
        kept = []
        for index, send in enumerate(sends):
            if stays[index]:
                send.records = stays[index]
                kept.append(send)
        return kept

    def _wanted(
        self, claimed: Sequence[Notification], plan: _Plan, now: datetime
    ) -> list[tuple[Notification, Route, str]]:
        """Each (notification, route, channel) its routes name that the channel has not
        settled and whose own retry is due (a channel keeps its backoff whatever else makes
        the notification due)."""
        wanted: list[tuple[Notification, Route, str]] = []
        for record in claimed:
            deliveries = record.deliveries or {}
            routes = [
                (route, channel)
                for route, channel in self.notifications.routed(subject(record))
                if channel in self.channels
            ]
            plan.routed[record.id] = [channel for _, channel in routes]
            for route, channel in routes:
                entry = _entry(deliveries, channel)
                if _settled(entry):
                    continue
                retry_at = _time(entry.get("retry_at"))
                if retry_at is not None and retry_at > now:
                    plan.hold(record, channel, retry_at)
                    continue
                wanted.append((record, route, channel))
        return wanted

    async def _behind_earlier(
        self,
        conn: Any,
        claimed: Sequence[Notification],
        wanted: list[tuple[Notification, Route, str]],
        plan: _Plan,
        now: datetime,
    ) -> list[tuple[Notification, Route, str]]:
        """``wanted`` without what must wait behind an earlier notification about the same
        episode or action that a channel has not settled yet (it is retrying, held for its
        group, or not due): those are held until it is next due, so a page's resolve never
        overtakes its trigger."""
        keys = {key for record, _, _ in wanted if (key := order_key(record)) is not None}
        if not keys:
            return wanted
        claimed_ids = {record.id for record in claimed}
        earlier = [
            other
            for other in await store.pending_about(
                conn,
                episodes={(k[1], k[2], k[3]) for k in keys if len(k) == 4},
                action_ids={k[1] for k in keys if k[0] == "action" and len(k) == 2},
                before=max(record.id for record, _, _ in wanted),
            )
            if other.id not in claimed_ids and order_key(other) in keys
        ]
        if not earlier:
            return wanted
        unsettled: dict[tuple[OrderKey, str], list[Notification]] = defaultdict(list)
        for other in earlier:
            key = order_key(other)
            assert key is not None
            for _, channel in self.notifications.routed(subject(other)):
                if not _settled(_entry(other.deliveries or {}, channel)):
                    unsettled[(key, channel)].append(other)
        kept = []
        for record, route, channel in wanted:
            key = order_key(record)
            blockers = [] if key is None else unsettled.get((key, channel), [])
            before = [o for o in blockers if o.id < record.id]
            if before:
                due = min(o.next_attempt_at or now for o in before)
                plan.hold(record, channel, max(due, now))
                continue
            kept.append((record, route, channel))
        return kept

    @staticmethod
    def _group_due(
        mark: Mark | None, route: Route, record: Notification, now: datetime
    ) -> datetime:
        """When ``record``'s group on a grouped route goes out: the time already set for
        the group's held events; else ``group_interval`` after the group last went out,
        if that is still ahead; else ``group_wait`` after this, its first event."""
        if mark is not None and mark.due_at is not None and mark.due_at >= record.at:
            return mark.due_at  # (a due time from before this event is a stale one's)
        if mark is not None and mark.sent_at is not None and route.group_interval is not None:
            after = mark.sent_at + timedelta(seconds=route.group_interval)
            if after > now:
                return after
        return record.at + timedelta(seconds=route.group_wait or 0.0)

    async def _threads(self, conn: Any, plan: _Plan) -> dict[tuple[int, str], Thread]:
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
    ) -> dict[int, _Answer]:
        """Send each planned message, all at once (each is the only one about its episode
        or action on its channel this pass); per index in ``plan.sends``, what came of it."""
        answers = await asyncio.gather(*(self._send_one(send, threads) for send in plan.sends))
        return dict(enumerate(answers))

    async def _send_one(self, send: _Send, threads: Mapping[tuple[int, str], Thread]) -> _Answer:
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
        everything = frozenset(r.id for r in send.records)
        try:
            async with asyncio.timeout(self._send_limit):
                refs = await channel.send(message)
        except DeliveryFailed as exc:
            taken = frozenset(exc.taken) & everything
            return _Answer(str(exc) or "refused", dict(exc.taken), taken)
        except TimeoutError:
            return _Answer(f"timed out after {self._send_limit:g}s")
        except Exception as exc:
            log.exception("notifier: channel %s failed unexpectedly", send.channel)
            return _Answer(f"{type(exc).__name__}: unexpected failure (see the logs)")
        return _Answer(None, refs, everything)

    def _outcomes(
        self,
        claimed: Sequence[Notification],
        plan: _Plan,
        answers: Mapping[int, _Answer],
        now: datetime,
    ) -> tuple[dict[int, Outcome], dict[str, Mark], dict[str, _GroupEnd]]:
        """Each claimed notification's state after the pass, the repeat marks to write, and
        how each group's try ended."""
        tried: dict[int, dict[str, tuple[str | None, dict[str, Any] | None]]] = defaultdict(dict)
        marks: dict[str, Mark] = {}
        groups: dict[str, _GroupEnd] = {}
        retry_at: dict[tuple[int, str], datetime] = {}
        for index, send in enumerate(plan.sends):
            answer = answers[index]
            for record in send.records:
                error = None if record.id in answer.taken else answer.error
                tried[record.id][send.channel] = (error, answer.refs.get(record.id))
            if send.route.grouped:
                key = group_key(send.route, send.channel)
                groups[key] = self._group_end(send, answer, plan, now, retry_at)
            if send.route.repeat_interval is not None:
                for record in send.records:
                    if record.id in answer.taken:
                        marks[repeat_key(send.route, send.channel, record)] = Mark(sent_at=now)
        outcomes = {
            record.id: self._outcome(record, tried.get(record.id, {}), plan, now, retry_at)
            for record in claimed
        }
        return outcomes, marks, groups

    def _group_end(
        self,
        send: _Send,
        answer: _Answer,
        plan: _Plan,
        now: datetime,
        retry_at: dict[tuple[int, str], datetime],
    ) -> _GroupEnd:
        """How a group's try ended: (the due time it was sent at, when it went out, its
        next due time). Sent; or due again as one -- every member at the same time, and what
        joins the group meanwhile -- unless none has a try left."""
        due_at = send.due_at
        failed = [r for r in send.records if r.id not in answer.taken]
        if not failed:
            return (due_at, now, None)
        tries = min(self._channel_attempts(r, send.channel) for r in failed) + 1
        if self._retry.exhausted(tries):
            return (due_at, None, None)
        again = now + timedelta(seconds=self._retry.delay(tries, self._rng))
        for record in failed:
            retry_at[(record.id, send.channel)] = again
        return (due_at, None, again)

    @staticmethod
    def _channel_attempts(record: Notification, channel: str) -> int:
        return int(_entry(record.deliveries or {}, channel).get("attempts", 0))

    def _outcome(
        self,
        record: Notification,
        tried: Mapping[str, tuple[str | None, dict[str, Any] | None]],
        plan: _Plan,
        now: datetime,
        retry_at: Mapping[tuple[int, str], datetime],
    ) -> Outcome:
        """``record``'s state: each channel's try counted and settled on its own (a
        channel that gives up does not end another's wait), the notification ``delivered``
        once every channel took it, ``failed`` once every channel is settled and some gave
        up, else due at the earliest retry or release of a held channel."""
        routed = plan.routed.get(record.id, [])
        deliveries: dict[str, Any] = {
            # A channel its routes no longer name (the file changed) waits for nothing.
            channel: {**entry, "held_until": None, "retry_at": None}
            if channel not in routed and isinstance(entry, dict)
            else entry
            for channel, entry in (record.deliveries or {}).items()
        }
        if not routed:
            took = any(_taken(entry) for entry in deliveries.values() if isinstance(entry, dict))
            status = DeliveryStatus.DELIVERED if took else DeliveryStatus.NONE
            delivered_at = record.delivered_at or (now if took else None)
            return Outcome(status, record.attempts, None, None, delivered_at, deliveries or None)
        for channel in plan.skipped.get(record.id, []):
            deliveries[channel] = {**self._base(record, channel), "skipped": "repeat"}
            deliveries[channel]["held_until"] = None
        for channel, until in plan.held.get(record.id, {}).items():
            deliveries[channel] = {**self._base(record, channel), "held_until": until.isoformat()}
        due: list[datetime] = list(plan.held.get(record.id, {}).values())
        for channel, (error, ref) in tried.items():
            before = self._base(record, channel)
            attempts = int(before.get("attempts", 0)) + 1
            entry = {
                **before,
                "attempts": attempts,
                "last_error": error,
                "delivered_at": None if error else now.isoformat(),
                "held_until": None,
                "retry_at": None,
                **({"ref": ref} if ref else {}),
            }
            if error is not None:
                if self._retry.exhausted(attempts):
                    entry["failed_at"] = now.isoformat()
                else:
                    delay = timedelta(seconds=self._retry.delay(attempts, self._rng))
                    again = retry_at.get((record.id, channel), now + delay)
                    entry["retry_at"] = again.isoformat()
                    due.append(again)
            deliveries[channel] = entry
        attempts = record.attempts + (1 if tried else 0)
        entries = [_entry(deliveries, channel) for channel in routed]
        errors = "; ".join(
            f"{channel}: {entry['last_error']}"
            for channel, entry in zip(routed, entries, strict=True)
            if entry.get("last_error") and not _taken(entry)
        )
        if all(_taken(entry) for entry in entries):
            return Outcome(DeliveryStatus.DELIVERED, attempts, None, None, now, deliveries)
        if all(_settled(entry) for entry in entries):
            return Outcome(DeliveryStatus.FAILED, attempts, None, errors or None, None, deliveries)
        next_at = min(due) if due else now
        return Outcome(DeliveryStatus.PENDING, attempts, next_at, errors or None, None, deliveries)

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
        answers: Mapping[int, _Answer],
    ) -> None:
        if result.status is DeliveryStatus.NONE:
            self._count(record.event, "", "none")
            return
        for channel in plan.skipped.get(record.id, []):
            self._count(record.event, channel, "skipped")
        before = record.deliveries or {}
        for channel in plan.held.get(record.id, {}):
            # Counted once, when its group first holds it; other waits are not counted.
            if (record.id, channel) in plan.grouped and not _entry(before, channel).get(
                "held_until"
            ):
                self._count(record.event, channel, "held")
        deliveries = result.deliveries or {}
        failed_now = False
        for index, send in enumerate(plan.sends):
            answer = answers[index]
            if not _holds(send, record):
                continue
            entry = _entry(deliveries, send.channel)
            if record.id in answer.taken:
                label = "delivered"
            elif entry.get("failed_at"):
                label = "failed"
                log.error(
                    "notifier: notification %s (%s) not delivered to %s after %d attempts: %s",
                    record.id,
                    record.event,
                    send.channel,
                    entry.get("attempts", 0),
                    entry.get("last_error"),
                )
            else:
                label = "retrying"
                failed_now = True
            self._count(record.event, send.channel, label)
        if failed_now:
            log.warning(
                "notifier: notification %s (%s) attempt %d failed, retrying at %s: %s",
                record.id,
                record.event,
                result.attempts,
                result.next_attempt_at.isoformat() if result.next_attempt_at else "?",
                result.last_error,
            )
