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
    engine: AsyncEngine, *, at: str = "commit", after: str = ""
) -> Iterator[list[bool]]:
    """Drop one PostgreSQL connection from the client side, as a crashed server would: at
    the COMMIT (``at="commit"``) or the statement (``at="statement"``) of the first
    transaction that runs a statement starting with ``after`` (any, when empty).

    Yields a list that holds ``True`` once a connection was dropped.
    """
    dropped: list[bool] = []
    chosen: set[int] = set()

    def drop(conn: Connection) -> None:
        dropped.append(True)
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.terminate()

    def on_statement(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if dropped or not statement.startswith(after):
            return
        if at == "statement":
            drop(conn)
        chosen.add(id(conn))

    def on_commit(conn: Connection) -> None:
        if not dropped and id(conn) in chosen:
            drop(conn)

    sync_engine = engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", on_statement)
    event.listen(sync_engine, "commit", on_commit)
    try:
        yield dropped
    finally:
        event.remove(sync_engine, "commit", on_commit)
        event.remove(sync_engine, "before_cursor_execute", on_statement)
