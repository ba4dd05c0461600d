"""The simulator inside a Vigil server: one run at a time, started and stopped through the
API, sending to the server's own ingest API over real HTTP (loopback), on the fleet that
the server's ``simulator`` remediations act on in-process.

The sender authenticates with the process's internal agent key (never written anywhere),
so a run works whether or not API keys are required.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

import httpx

from vigil.clock import Clock
from vigil.errors import Conflict
from vigil.observability.logging import get_logger
from vigil.simulator.fleet import Fleet
from vigil.simulator.sender import Counts, RunConfig, Sender
from vigil.strict import CLIENT_HEADERS

log = get_logger(__name__)


def loopback_url(host: str, port: int) -> str:
    """The URL a server listening on ``host:port`` reaches itself at."""
    if host in ("", "0.0.0.0", "localhost"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class SimulatorControl:
    """The server's simulator: its fleet, the current (or last) run and its counts."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        clock: Clock,
    ) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._clock = clock
        self.transport: httpx.AsyncBaseTransport | None = None
        """Where requests go (None: the network); a test may route them to an app."""
        self.fleet = Fleet()
        self.config: RunConfig | None = None
        self.counts = Counts()
        self.started_at: datetime | None = None
        self.stopped_at: datetime | None = None
        self.stop_reason: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        """Start and stop one at a time: two starts at once must not both begin a run."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, config: RunConfig) -> dict[str, Any]:
        """Start a run on a fresh fleet (:class:`Conflict` while one runs; ``ValueError``
        for a service the fleet does not have)."""
        async with self._lock:
            return await self._start(config)

    async def _start(self, config: RunConfig) -> dict[str, Any]:
        if self.running:
            raise Conflict("the simulator is already running: stop it first")
        fleet = config.fleet()
        await self._close_client()
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            transport=self.transport,
            headers={"x-api-key": self._api_key, "user-agent": "vigil-simulator", **CLIENT_HEADERS},
            # Loopback only, carrying the internal key: never through a proxy from the
            # environment (HTTP_PROXY), which would see the key and break every request.
            trust_env=False,
        )
        self.fleet = fleet
        self.config = config
        self.counts = Counts()
        self.started_at = self._clock.now()
        self.stopped_at = None
        self.stop_reason = None
        sender = Sender(fleet, config, self._client, counts=self.counts)
        self._task = asyncio.create_task(self._run(sender), name="vigil-simulator")
        log.info("simulator.started", **config.as_dict())
        return self.status()

    async def _run(self, sender: Sender) -> None:
        try:
            await sender.run()
            self.stop_reason = "finished"
        except asyncio.CancelledError:
            self.stop_reason = self.stop_reason or "stopped"
            raise
        except Exception as exc:
            self.stop_reason = f"error: {type(exc).__name__}: {exc}"
            log.exception("simulator.crashed")
        finally:
            self.stopped_at = self._clock.now()
            log.info("simulator.ended", reason=self.stop_reason, **self.counts.as_dict())

    async def stop(self, reason: str = "stopped") -> tuple[bool, dict[str, Any]]:
        """Stop the run: whether this call stopped one (of several at once, only one did),
        and the final status."""
        async with self._lock:
            task = self._task
            stopped = task is not None and not task.done()
            if task is not None and stopped:
                self.stop_reason = reason
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            return stopped, self.status()

    async def close(self) -> None:
        await self.stop("shutdown")
        await self._close_client()

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def status(self) -> dict[str, Any]:
        """What ``GET /api/v1/simulator/status`` shows."""
        config = self.config
        counts = self.counts
        return {
            "running": self.running,
            "scenario": config.scenario if config else None,
            "mode": config.mode if config else None,
            "rate": config.rate if config else None,
            "config": config.as_dict() if config else None,
            "events_generated": counts.generated,
            "events_succeeded": counts.succeeded,
            "events_failed": counts.failed,
            "events_rejected": counts.rejected,
            "requests": counts.requests,
            "malformed": counts.malformed,
            "abandoned": counts.abandoned,
            "server_errors": counts.server_errors,
            "last_error": counts.last_error,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "stop_reason": self.stop_reason,
            "fleet": self.fleet.snapshot(),
        }
