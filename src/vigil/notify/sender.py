"""The notification sender: POSTs each notification as JSON to every configured webhook.

Every ``interval`` seconds, and as soon as a transaction of this process that recorded a
notification commits, the sender claims the notifications that are due -- a compare-and-set
on their due time, pushed ``timeout`` + a margin ahead, so API processes share the work and
never send one notification at the same time -- POSTs each to every webhook that has not
taken it yet, and records the outcome: ``delivered`` once every webhook answered 2xx, else
another try after an exponential backoff with jitter, and ``failed`` after the last
attempt. A sender that dies mid-try leaves its claim to expire, and the notification is
sent again: delivery is at least once, and a receiver deduplicates by the ``id``.

Webhook URLs may carry a token (a Slack-style hook's path is one): only their scheme and
host are ever logged or stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson
from sqlalchemy import event
from sqlalchemy.engine import Connection

import vigil
from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.errors import Unavailable
from vigil.notify import store
from vigil.notify.events import DeliveryStatus
from vigil.notify.store import Notification
from vigil.observability.metrics import VigilMetrics
from vigil.worker.backoff import RetryPolicy

log = logging.getLogger(__name__)

CLAIM_MARGIN_SECONDS = 30.0
"""How much longer than one request's timeout a claim lasts: a try that outlives it (the
process stalled) may be sent again by another process."""

API_PREFIX = "/api/v1"


@dataclass(frozen=True, slots=True)
class Webhook:
    """A configured webhook URL."""

    url: str

    @property
    def key(self) -> str:
        """Its key in a notification's delivery record: a digest, not the URL."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def shown(self) -> str:
        """The URL as logs and the API show it: scheme and host only (user info, path and
        query may all carry credentials)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A notification's delivery state after one try."""

    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    deliveries: dict[str, Any]


def links(record: Notification) -> dict[str, str | None]:
    """API paths about a notification: its action, its policy, the notification list."""
    action_id, policy = record.action_id, record.policy_name
    return {
        "action": None if action_id is None else f"{API_PREFIX}/actions/{action_id}",
        "policy": None if policy is None else f"{API_PREFIX}/policies/{quote(policy, safe='')}",
        "notifications": f"{API_PREFIX}/notifications",
    }


def payload(record: Notification) -> dict[str, Any]:
    """The JSON body POSTed to each webhook."""
    return {
        "id": record.id,
        "event": record.event,
        "at": record.at,
        "policy": record.policy_name,
        "target": record.target,
        "action": record.action_id,
        "reason": record.reason,
        "details": record.details,
        "links": links(record),
    }


def outcome(
    record: Notification,
    sent: Mapping[Webhook, str | None],
    *,
    webhooks: Sequence[Webhook],
    now: datetime,
    retry: RetryPolicy,
    rng: random.Random | None = None,
) -> Outcome:
    """The state after a try that sent ``record`` to the webhooks in ``sent`` (each mapped to
    its error, ``None`` for a 2xx). Pure."""
    attempts = record.attempts + 1
    deliveries: dict[str, Any] = dict(record.deliveries or {})
    for webhook, error in sent.items():
        before = deliveries.get(webhook.key) or {}
        deliveries[webhook.key] = {
            "url": webhook.shown,
            "attempts": int(before.get("attempts", 0)) + 1,
            "last_error": error,
            "delivered_at": None if error else now.isoformat(),
        }
    if all((deliveries.get(w.key) or {}).get("delivered_at") for w in webhooks):
        return Outcome(DeliveryStatus.DELIVERED, attempts, None, None, now, deliveries)
    error = "; ".join(f"{w.shown}: {e}" for w, e in sent.items() if e)
    if retry.exhausted(attempts):
        return Outcome(DeliveryStatus.FAILED, attempts, None, error, None, deliveries)
    due = now + timedelta(seconds=retry.delay(attempts, rng))
    return Outcome(DeliveryStatus.PENDING, attempts, due, error, None, deliveries)


class Notifier:
    """Sends due notifications every ``interval`` seconds (and when woken) until stopped."""

    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        metrics: VigilMetrics,
        urls: Sequence[str],
        timeout: float,
        retry: RetryPolicy,
        interval: float,
        batch: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._metrics = metrics
        self.webhooks = tuple(Webhook(url) for url in dict.fromkeys(urls))
        self._timeout = timeout
        self._retry = retry
        self._interval = interval
        self._batch = batch
        self._transport = transport
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

    async def run_once(self) -> int:
        """Claim the due notifications and try each once; how many were tried (or, with no
        webhook configured, marked ``none``)."""
        now = self._clock.now()
        if not self.webhooks:
            async with self._db.write() as conn:
                unsendable = await store.settle_unsendable(conn, now=now)
            for event in unsendable:
                self._metrics.notifications_total.labels(event=event, result="none").inc()
            return len(unsendable)
        until = now + timedelta(seconds=self._timeout + CLAIM_MARGIN_SECONDS)
        async with self._db.write() as conn:
            claimed = await store.claim_due(conn, now=now, until=until, limit=self._batch)
        if not claimed:
            return 0
        async with httpx.AsyncClient(transport=self._transport, timeout=self._timeout) as client:
            tries = await asyncio.gather(*(self._send(client, record) for record in claimed))
        now = self._clock.now()
        results = [
            (
                record,
                outcome(
                    record, sent, webhooks=self.webhooks, now=now, retry=self._retry, rng=self._rng
                ),
            )
            for record, sent in zip(claimed, tries, strict=True)
        ]
        async with self._db.write() as conn:
            for record, result in results:
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
        for record, result in results:
            self._report(record, result)
        return len(claimed)

    async def _send(
        self, client: httpx.AsyncClient, record: Notification
    ) -> dict[Webhook, str | None]:
        """POST ``record`` to each webhook that has not taken it yet; each one's error."""
        body = orjson.dumps(payload(record), option=orjson.OPT_UTC_Z)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vigil/{vigil.__version__}",
            "X-Vigil-Event": record.event,
        }
        done = record.deliveries or {}
        todo = [w for w in self.webhooks if not (done.get(w.key) or {}).get("delivered_at")]
        errors = await asyncio.gather(*(self._post(client, w, body, headers) for w in todo))
        return dict(zip(todo, errors, strict=True))

    async def _post(
        self, client: httpx.AsyncClient, webhook: Webhook, body: bytes, headers: dict[str, str]
    ) -> str | None:
        """POST once; ``None`` on a 2xx, else what went wrong (without the URL)."""
        try:
            async with (
                asyncio.timeout(self._timeout),
                client.stream("POST", webhook.url, content=body, headers=headers) as response,
            ):
                code = response.status_code  # the body is never read
        except (TimeoutError, httpx.TimeoutException):
            return f"timed out after {self._timeout:g}s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            reason = str(exc).replace(webhook.url, webhook.shown) or type(exc).__name__
            return f"{type(exc).__name__}: {reason}"
        if 200 <= code < 300:
            return None
        return f"answered {code}"

    def _report(self, record: Notification, result: Outcome) -> None:
        result_label = {
            DeliveryStatus.DELIVERED: "delivered",
            DeliveryStatus.FAILED: "failed",
        }.get(result.status, "retrying")
        self._metrics.notifications_total.labels(event=record.event, result=result_label).inc()
        if result.status is DeliveryStatus.FAILED:
            log.error(
                "notifier: notification %s (%s) not delivered after %d attempts: %s",
                record.id,
                record.event,
                result.attempts,
                result.last_error,
            )
        elif result.status is DeliveryStatus.PENDING:
            log.warning(
                "notifier: notification %s (%s) attempt %d failed, retrying at %s: %s",
                record.id,
                record.event,
                result.attempts,
                result.next_attempt_at.isoformat() if result.next_attempt_at else "?",
                result.last_error,
            )
