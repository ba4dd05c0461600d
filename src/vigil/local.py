"""Vigil processes on this machine, started and stopped by another program: ``vigil demo``,
the benchmarks in ``bench/`` and the tests that run a real server.

Each server runs in a session of its own (so stopping it stops its children), logs to
``WORKDIR/NAME.log``, and counts as up once ``GET /health`` answers 200 on 127.0.0.1. Its
data stays in ``WORKDIR`` too: given neither ``DATABASE_URL`` nor ``VIGIL_DATA_DIR``, it
gets ``VIGIL_DATA_DIR=WORKDIR``, never the user's own data directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from vigil.settings import Settings, setting_env_name


class ServerFailed(RuntimeError):
    """A server exited or did not answer in time; the message ends with its log's tail."""


def free_port() -> int:
    """A port nothing listens on at 127.0.0.1 (as of now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port``, so a server started there is ours."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_SETTINGS = frozenset(setting_env_name(field) for field in Settings.model_fields)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Vigil setting (``VIGIL_*``, ``DATABASE_URL``,
    ``REDIS_URL``, ``CORS_ORIGINS``), plus ``extra``: a server gets exactly the settings it
    is given, on the embedded defaults otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_") and k not in _SETTINGS}
    env.update(extra)
    return env


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path) -> Server:
    """Start ``argv`` in ``workdir`` (not waiting for it), its data in ``workdir`` unless
    ``env`` names a database or data directory."""
    log = workdir / f"{name}.log"
    if "DATABASE_URL" not in env and "VIGIL_DATA_DIR" not in env:
        env = {**env, "VIGIL_DATA_DIR": str(workdir)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, process, port, log)


def wait_healthy(server: Server, timeout: float) -> None:
    """Until ``/health`` answers 200; :class:`ServerFailed` if the server exits first or
    does not answer within ``timeout`` seconds. Never through a proxy: the server is here."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise ServerFailed(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            health = httpx.get(f"{server.url}/health", timeout=1.0, trust_env=False)
            if health.status_code == 200:
                return
        if time.monotonic() > deadline:
            raise ServerFailed(
                f"{server.name} did not answer within {timeout:g}s:\n{server.log_tail()}"
            )
        time.sleep(0.05)


def stop(server: Server) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    process = server.process
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@contextlib.contextmanager
def running(
    name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path, timeout: float
) -> Iterator[Server]:
    """Start a server, wait until ``/health`` answers, and stop it on the way out."""
    server = start(name, argv, env, port, workdir)
    try:
        wait_healthy(server, timeout)
        yield server
    finally:
        stop(server)
