"""Reaching the real Redis, PostgreSQL and Prometheus of the machine, or skipping (failing in
CI); private Redis and PostgreSQL servers for tests that stop them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

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


def need_alertmanager() -> str:
    """The ``prometheus-alertmanager`` server binary (.ci/run installs it)."""
    return need_program("prometheus-alertmanager", "prometheus-alertmanager")


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


class DatabaseCopies:
    """Fresh copies of one migrated template database, made ahead of the tests that take them.

    Creating a database from a template and dropping it cost PostgreSQL a few hundred
    milliseconds of mostly disk work each; two background threads do it while the tests run:
    one keeps ``ahead`` copies of ``template`` ready, the other drops the copies given back.
    Every copy is handed out once, untouched since it was created. A copy of another template (a
    test module's own) is made when asked. Errors of the background work are raised by
    :meth:`take` (a copy that could not be made) and by :meth:`close` (a drop that failed).
    """

    def __init__(self, template: str, ahead: int = 2) -> None:
        self.template = template
        self._ahead = ahead
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database-copies")
        self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database-drops")
        self._ready: deque[Future[str]] = deque()
        self._drops: list[Future[None]] = []

    def take(self, template: str) -> str:
        """The name of a fresh copy of ``template``, for the caller alone."""
        if template != self.template:
            return create_database(template)
        while len(self._ready) <= self._ahead:
            self._ready.append(self._executor.submit(create_database, template))
        return self._ready.popleft().result()

    def give_back(self, name: str) -> None:
        """Drop ``name`` (a copy the caller is done with) in the background."""
        self._drops.append(self._dropper.submit(drop_database, name))

    def close(self) -> None:
        """Drop the copies made ahead and not taken; wait for every drop."""
        try:
            while self._ready:
                self.give_back(self._ready.popleft().result())
        finally:
            self._executor.shutdown(wait=True)
            self._dropper.shutdown(wait=True)
        for drop in self._drops:
            drop.result()


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


class PrivatePostgres:
    """A throwaway PostgreSQL server of one test (:func:`own_postgres_server`): its own data
    directory and port, to stop and start at will. ``url`` reaches its ``postgres`` database
    as ``root`` without a password."""

    def __init__(self, bindir: Path, directory: Path, port: int) -> None:
        self.bindir = bindir
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = port
        self.url = f"postgresql://root@127.0.0.1:{port}/postgres"
        # initdb and postgres refuse to run as root: run them as the postgres user then.
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._directory = directory

    def _run(self, program: str, *args: str) -> None:
        argv = [*self._as_owner, str(self.bindir / program), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            pytest.fail(f"{program} {' '.join(args)}: {done.stdout}{done.stderr}\n{log}")

    def init(self) -> None:
        if self._as_owner:
            shutil.chown(self._directory, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", "root", "--auth=trust", "-E", "UTF8", "--no-sync"
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._directory} "
            "-c fsync=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``immediate`` ends every process at once, like a crash
        (the next start recovers from the WAL)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def _postgres_bindir() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        if REQUIRE:
            pytest.fail("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    return found[-1].parent


@contextlib.contextmanager
def own_postgres_server() -> Iterator[PrivatePostgres]:
    """Start a private, throwaway PostgreSQL server (initdb + pg_ctl, in a temporary
    directory the postgres user can reach, on a free port); yield it. For tests that stop
    the server: the shared one stays untouched. Stopped and deleted when the block exits."""
    bindir = _postgres_bindir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    directory = Path(tempfile.mkdtemp(prefix="vigil-postgres-"))
    server = PrivatePostgres(bindir, directory, port)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
