"""Helpers shared by tests: waiting on a condition, running Vigil as a real process, the
names of its metrics, and a PostgreSQL connection lost at a chosen moment."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from vigil.observability.metrics import VigilMetrics
from vigil.remediation.metrics import RemediatorMetrics

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
"""Seconds a test waits for a condition by default: long enough for a busy two-core machine,
and waited in full only when the condition never holds."""


def _timed_out(
    within: float, what: str | Callable[[], str], last: object, details: Callable[[], str] | None
) -> AssertionError:
    described = what() if callable(what) else what
    extra = details() if details is not None else ""
    return AssertionError(
        f"timed out after {within}s waiting for {described}; last: {last!r}{extra}"
    )


def wait_for(
    condition: Callable[[], T | None],
    *,
    what: str | Callable[[], str],
    within: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy, and
    return that; after ``within`` seconds fail with an AssertionError naming ``what``, the
    last value and ``details()`` (log tails, say). Blocks the thread: for tests that are not
    coroutines."""
    deadline = time.monotonic() + within
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise _timed_out(within, what, last, details)
        time.sleep(interval)


async def wait_for_async(
    condition: Callable[[], Awaitable[T | None]],
    *,
    what: str | Callable[[], str],
    within: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
    details: Callable[[], str] | None = None,
) -> T:
    """:func:`wait_for` for coroutine tests: awaits ``condition()`` and sleeps without
    blocking the event loop, so the code under test runs meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        last = await condition()
        if last:
            return last
        if loop.time() > deadline:
            raise _timed_out(within, what, last, details)
        await asyncio.sleep(interval)


# The series a metric family of each type exposes, by suffix of the family's name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def vigil_metric_series() -> dict[str, frozenset[str]]:
    """Every metric of Vigil (the API's and worker's, and the remediator's), by the name
    docs/api.md gives it (``vigil_ingest_total``, ``vigil_build_info``,
    ``vigil_action_duration_seconds``), with the names of the series it exposes."""
    registries = [VigilMetrics(CollectorRegistry()).registry]
    registries.append(RemediatorMetrics(CollectorRegistry()).registry)
    found: dict[str, frozenset[str]] = {}
    for registry in registries:
        for family in registry.collect():
            series = [family.name + suffix for suffix in _SUFFIXES[family.type]]
            found[series[0] if family.type in ("counter", "info") else family.name] = frozenset(
                series
            )
    return found


class _Dropper:
    """Engine listeners dropping the connection of one chosen transaction (see
    :func:`connection_lost`)."""

    def __init__(self, *, at: str, after: str, nth: int, landed: bool) -> None:
        self.at, self.after, self.nth, self.landed = at, after, nth, landed
        self.dropped: list[bool] = []
        self.matching: set[int] = set()
        self.seen = 0

    def drop(self, conn: Connection) -> None:
        self.dropped.append(True)
        driver = conn.connection.driver_connection
        assert driver is not None
        if self.landed:
            await_only(driver.execute("COMMIT"))
        driver.terminate()

    def on_begin(self, conn: Connection) -> None:
        self.matching.discard(id(conn))

    def on_statement(self, conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.dropped or id(conn) in self.matching or not statement.startswith(self.after):
            return
        self.matching.add(id(conn))
        self.seen += 1
        if self.at == "statement" and self.seen == self.nth:
            self.drop(conn)

    def on_commit(self, conn: Connection) -> None:
        if not self.dropped and id(conn) in self.matching and self.seen == self.nth:
            self.drop(conn)


@contextlib.contextmanager
def connection_lost(
    engine: AsyncEngine,
    *,
    at: str = "commit",
    after: str = "",
    nth: int = 1,
    landed: bool = False,
) -> Iterator[list[bool]]:
    """Drop one PostgreSQL connection from the client side, as a crashed server would: at
    the COMMIT (``at="commit"``) or the statement (``at="statement"``) of the ``nth``
    transaction that runs a statement starting with ``after`` (any, when empty). With
    ``landed``, the COMMIT reaches the server first and only its answer is lost.

    Yields a list that holds ``True`` once a connection was dropped.
    """
    dropper = _Dropper(at=at, after=after, nth=nth, landed=landed)
    listeners = (
        ("begin", dropper.on_begin),
        ("before_cursor_execute", dropper.on_statement),
        ("commit", dropper.on_commit),
    )
    for name, listener in listeners:
        event.listen(engine.sync_engine, name, listener)
    try:
        yield dropper.dropped
    finally:
        for name, listener in listeners:
            event.remove(engine.sync_engine, name, listener)
