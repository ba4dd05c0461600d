"""Helpers shared by tests: waiting on a condition, running Vigil as a real process, and the
names of its metrics."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry

from vigil.local import running
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


@contextlib.contextmanager
def running_vigil(cwd: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """Run ``vigil serve`` in ``cwd``; yield its base URL once /health answers."""
    argv = [sys.executable, "-m", "vigil", "serve", "--port", str(port)]
    with running("vigil", argv, env, port, cwd, timeout=30) as server:
        yield server.url


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
