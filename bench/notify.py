"""Notification benchmark: how fast the outbox delivers, against bare POSTs of the same bodies.

Two rows, one after the other, against one local HTTP receiver (asyncio, answers 204):

1. ``bare POSTs``  the JSON bodies of ``--count`` notifications POSTed with httpx,
                   ``--batch`` at a time: what the network and the receiver cost;
2. ``outbox``      ``--count`` notifications recorded in a fresh database, then delivered by
                   Vigil's sender to a ``webhook`` channel (claims, routing, per-channel
                   delivery records, ``--batch`` a pass), from the first claim to the last
                   recorded delivery.

The sender's share is the outbox time over the bare time. Target: the outbox takes at most
twice the time of the bare POSTs (everything it adds -- the claim, the routing, the
delivery records, all in the database -- costs no more than the HTTP itself).

Run: ``.venv/bin/python bench/notify.py`` (or ``make bench-notify``); ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from vigil.clock import SystemClock
from vigil.db.engine import Database, create_engine
from vigil.db.migrate import upgrade
from vigil.notify import store
from vigil.notify.channels.base import links
from vigil.notify.channels.registry import build_channels
from vigil.notify.channels.webhook import payload
from vigil.notify.config import load_notifications
from vigil.notify.events import DeliveryStatus, NotificationEvent
from vigil.notify.sender import Notifier
from vigil.observability.metrics import VigilMetrics
from vigil.settings import Settings
from vigil.worker.backoff import RetryPolicy

TARGET = 2.0
"""The most the outbox may take, in multiples of the bare POSTs' time."""


class Receiver:
    """A local HTTP/1.1 server answering every request 204, keeping connections open."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.requests += 1
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def record(database: Database, count: int) -> None:
    now = SystemClock().now()
    async with database.write() as conn:
        for i in range(count):
            await store.record_notification(
                conn,
                now=now,
                event=NotificationEvent.ACTION_FAILED,
                policy_name="web-cpu-high",
                target=f"web-{i:05d}",
                action_id=i + 1,
                reason=f"scale-up on web-{i:05d} failed at attempt 3: quota exceeded",
                details={"action": "scale-up", "attempt": 3},
                severity="critical",
                episode=1,
            )


async def bare(url: str, count: int, batch: int) -> float:
    records = [_sample(i) for i in range(count)]
    bodies = [orjson.dumps(payload(r, links(r, None)), option=orjson.OPT_UTC_Z) for r in records]
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        for start in range(0, count, batch):
            await asyncio.gather(
                *(
                    client.post(url, content=body, headers=headers)
                    for body in bodies[start : start + batch]
                )
            )
        return time.perf_counter() - started


def _sample(i: int) -> store.Notification:
    return store.Notification(
        id=i + 1,
        at=SystemClock().now(),
        event="action_failed",
        policy_name="web-cpu-high",
        target=f"web-{i:05d}",
        action_id=i + 1,
        reason=f"scale-up on web-{i:05d} failed at attempt 3: quota exceeded",
        details={"action": "scale-up", "attempt": 3},
        severity="critical",
        tags=None,
        episode=1,
        delivery_status="pending",
        attempts=0,
        next_attempt_at=None,
        last_error=None,
        delivered_at=None,
        deliveries=None,
    )


async def outbox(url: str, count: int, batch: int, database_url: str) -> float:
    database = Database(create_engine(Settings(database_url=database_url)))
    try:
        await upgrade(database)
        await record(database, count)
        notifications = load_notifications(None, webhook_urls=[url])
        notifier = Notifier(
            database=database,
            clock=SystemClock(),
            metrics=VigilMetrics(),
            notifications=notifications,
            channels=build_channels(notifications, timeout=5.0),
            timeout=5.0,
            retry=RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=10),
            interval=3600.0,
            batch=batch,
        )
        started = time.perf_counter()
        while await notifier.run_once():
            pass
        took = time.perf_counter() - started
        await notifier.aclose()
        async with database.read() as conn:
            _, delivered = await store.list_notifications(
                conn, page=1, limit=1, delivery=DeliveryStatus.DELIVERED
            )
        if delivered != count:
            sys.exit(f"only {delivered} of {count} notifications were delivered")
        return took
    finally:
        await database.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="notifications (default 2000)")
    parser.add_argument("--batch", type=int, default=50, help="per pass / in flight (50)")
    parser.add_argument(
        "--database-url", default=None, help="default: a fresh SQLite file in a temporary folder"
    )
    args = parser.parse_args()
    receiver = Receiver()
    url = await receiver.start()
    with tempfile.TemporaryDirectory() as folder:
        database_url = args.database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
        base = await bare(url, args.count, args.batch)
        took = await outbox(url, args.count, args.batch, database_url)
    await receiver.stop()
    print(f"python {platform.python_version()} on {platform.machine()}, {args.count} notifications")
    print(f"{'row':<12} {'seconds':>8} {'per second':>11}")
    print(f"{'bare POSTs':<12} {base:>8.2f} {args.count / base:>11,.0f}")
    rate = args.count / took
    print(f"{'outbox':<12} {took:>8.2f} {rate:>11,.0f}")
    print(f"outbox / bare: {took / base:.1f}x the time")
    verdict = "met" if took <= TARGET * base else "NOT met"
    print(f"target: outbox <= {TARGET:g}x the bare POSTs' time: {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
