"""Reaching the real Redis, PostgreSQL and Prometheus of the machine, or skipping (failing in
CI)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for

PG_ADMIN_URL = os.environ.get("VIGIL_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("VIGIL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE = os.environ.get("VIGIL_REQUIRE_SERVICES", "") not in ("", "0", "false")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need(service: str, host: str, port: int) -> None:
    """Skip the test unless ``service`` answers; with VIGIL_REQUIRE_SERVICES=1, fail instead."""
    if _answers(host, port):
        return
    message = f"{service} is not answering on {host}:{port}"
    if REQUIRE:
        pytest.fail(f"{message} (VIGIL_REQUIRE_SERVICES is set)")
    pytest.skip(f"{message}; start it to run this test")


def need_postgres() -> None:
    need("PostgreSQL", "127.0.0.1", 5432)


def need_redis() -> None:
    need("Redis", "127.0.0.1", 6379)


def need_program(name: str, package: str) -> str:
    """The path of program ``name``; skip the test when it is not installed (with
    VIGIL_REQUIRE_SERVICES=1, fail instead)."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (Debian package {package})"
    if REQUIRE:
        pytest.fail(f"{message} (VIGIL_REQUIRE_SERVICES is set)")
    pytest.skip(f"{message}; install it to run this test")


def need_prometheus() -> str:
    """The ``prometheus`` server binary (.ci/run installs it)."""
    return need_program("prometheus", "prometheus")


def need_promtool() -> str:
    """``promtool``, which comes with the ``prometheus`` package."""
    return need_program("promtool", "prometheus")


def _admin_dsn() -> str:
    return PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")


async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_admin_dsn())
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_database(template: str | None = None) -> str:
    """Create a fresh PostgreSQL database (optionally from a template); its name."""
    name = f"vigil_test_{uuid.uuid4().hex[:12]}"
    # FILE_COPY copies the template's files instead of WAL-logging every block: ~2x faster.
    clause = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
    asyncio.run(_admin(f"CREATE DATABASE {name}{clause}"))
    return name


def drop_database(name: str) -> None:
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def database_url(name: str) -> str:
    base = _admin_dsn().rsplit("/", 1)[0]
    return f"{base}/{name}"


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def own_redis_server() -> Iterator[str]:
    """Start a private, throwaway ``redis-server`` on a free port; yield its URL.

    For tests that destroy data (FLUSHALL, restarts) or stop the server: the shared one
    stays untouched. Nothing is persisted; the server is stopped when the block exits.
    """
    binary = need_program("redis-server", "redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = ["--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"redis-server on port {port} exited with {proc.returncode}")
            return _redis_answers(port)

        wait_for(answers, what=f"redis-server on port {port} to answer")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
