"""Helpers shared by tests: running Vigil as a real process, the names of its metrics, and
a PostgreSQL connection lost at a chosen moment."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from vigil.local import running
from vigil.observability.metrics import VigilMetrics
from vigil.remediation.metrics import RemediatorMetrics

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
    dropped: list[bool] = []
    matching: set[int] = set()
    seen = [0]

    def drop(conn: Connection) -> None:
        dropped.append(True)
        driver = conn.connection.driver_connection
        assert driver is not None
        if landed:
            await_only(driver.execute("COMMIT"))
        driver.terminate()

    def on_begin(conn: Connection) -> None:
        matching.discard(id(conn))

    def on_statement(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if dropped or id(conn) in matching or not statement.startswith(after):
            return
        matching.add(id(conn))
        seen[0] += 1
        if at == "statement" and seen[0] == nth:
            drop(conn)

    def on_commit(conn: Connection) -> None:
        if not dropped and id(conn) in matching and seen[0] == nth:
            drop(conn)

    listeners = (
        ("begin", on_begin),
        ("before_cursor_execute", on_statement),
        ("commit", on_commit),
    )
    for name, listener in listeners:
        event.listen(engine.sync_engine, name, listener)
    try:
        yield dropped
    finally:
        for name, listener in listeners:
            event.remove(engine.sync_engine, name, listener)
