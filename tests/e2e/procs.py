"""Real Vigil processes for end-to-end tests: start, wait until healthy, stop, read their logs.

Each process writes its output to a log file in the test's directory; every failure message
built here ends with the tails of all the logs (:meth:`Processes.tails`), so a failing run
says what the processes were doing. Nothing sleeps for a fixed time: :func:`wait_for` polls
a condition until a deadline (:func:`tests.helpers.wait_for`, with the log tails).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import httpx

from tests import helpers
from vigil.local import clean_env, free_port

T = TypeVar("T")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LOG_TAIL_LINES = 40


@dataclass
class VigilProcess:
    """One running ``python -m vigil ...``; ``url`` is where its /health answers."""

    name: str
    argv: list[str]
    url: str
    log_path: Path
    popen: subprocess.Popen[bytes]
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting up to ``timeout`` seconds (raises TimeoutExpired)."""
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


@dataclass
class Processes:
    """The processes of one test, stopped (SIGTERM, then SIGKILL) when the test ends."""

    directory: Path
    base_env: dict[str, str]
    started: list[VigilProcess] = field(default_factory=list)

    def start(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> VigilProcess:
        """Run ``python -m vigil COMMAND`` with the base env plus ``env``; by default wait
        until its /health on ``port`` answers."""
        log_path = self.directory / f"{name}.log"
        log = log_path.open("ab")
        argv = [sys.executable, "-m", "vigil", *command]
        popen = subprocess.Popen(
            argv,
            cwd=self.directory,
            env={**self.base_env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        proc = VigilProcess(name, argv, f"http://127.0.0.1:{port}", log_path, popen, log)
        self.started.append(proc)
        if wait:
            self.wait_healthy(proc)
        return proc

    def serve(
        self,
        name: str = "api",
        *,
        no_worker: bool = False,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> VigilProcess:
        port = free_port()
        command = ["serve", "--port", str(port)]
        if no_worker:
            command.append("--no-worker")
        return self.start(name, command, port=port, env=env, wait=wait)

    def worker(
        self, name: str = "worker", *, env: dict[str, str] | None = None, wait: bool = True
    ) -> VigilProcess:
        port = free_port()
        return self.start(
            name, ["worker", "--metrics-port", str(port)], port=port, env=env, wait=wait
        )

    def remediator(
        self, name: str = "remediator", *, env: dict[str, str] | None = None, wait: bool = True
    ) -> VigilProcess:
        port = free_port()
        return self.start(name, ["remediator", "--port", str(port)], port=port, env=env, wait=wait)

    def wait_healthy(self, *procs: VigilProcess, timeout: float = START_TIMEOUT) -> None:
        """Until every one of ``procs`` answers /health (they start in parallel)."""
        waiting = list(procs)

        def all_healthy() -> bool:
            for proc in list(waiting):
                if proc.returncode is not None:
                    raise AssertionError(
                        f"{proc.name} exited with {proc.returncode} before answering /health"
                        + self.tails()
                    )
                if proc.healthy():
                    waiting.remove(proc)
            return not waiting

        wait_for(
            all_healthy,
            timeout=timeout,
            what=lambda: "/health of " + ", ".join(p.name for p in waiting),
            procs=self,
            interval=0.05,
        )

    def tails(self) -> str:
        """The last lines of every process's log, for an assertion message."""
        parts = []
        for proc in self.started:
            state = "running" if proc.returncode is None else f"exit {proc.returncode}"
            parts.append(f"\n----- {proc.name} (pid {proc.pid}, {state}) -----\n{proc.tail()}")
        return "".join(parts)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


@contextmanager
def processes(directory: Path, **env: str) -> Iterator[Processes]:
    """A :class:`Processes` whose members are all stopped when the block exits; their data
    is in ``directory`` unless ``env`` says otherwise."""
    group = Processes(directory, clean_env(**{"VIGIL_DATA_DIR": str(directory), **env}))
    try:
        yield group
    finally:
        group.stop_all()


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str | Callable[[], str],
    procs: Processes | None = None,
    interval: float = 0.05,
) -> T:
    """:func:`tests.helpers.wait_for`, its failure message ending with the log tails of
    ``procs``."""
    details = procs.tails if procs is not None else None
    return helpers.wait_for(
        condition, within=timeout, what=what, interval=interval, details=details
    )
