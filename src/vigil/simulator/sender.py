"""The load generator: steps a :class:`~vigil.simulator.fleet.Fleet` and sends what its
agents would send to Vigil's ingest API, over real HTTP, at a chosen rate.

Every sample generated ends up counted exactly once, by how Vigil answered the request that
carried it: ``succeeded`` (2xx), ``rejected`` (4xx: Vigil refused it, as it should refuse a
malformed payload) or ``failed`` (5xx, no answer, a timeout). In ``chaos`` mode, or with the
rates set, some requests are deliberately malformed (``malformed_rate``) or given up on
almost at once, as an agent with a tight timeout would (``failure_rate``).

The rate is in samples per second: the fleet is stepped as often as that rate allows (one
step of the default fleet is 18 samples, so 20/s is a step about every 0.9 s). When Vigil
answers slower than that, the sender falls behind rather than piling up requests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import httpx
import orjson

from vigil.observability.logging import get_logger
from vigil.simulator.fleet import DEFAULT_FLEET, Fleet, Mode, Sample, Shape

log = get_logger(__name__)

SINGLE_CONCURRENCY = 32
"""Single-metric requests in flight at once."""
REQUEST_TIMEOUT = 10.0
"""How long a normal request may take before it counts as failed."""
ABANDON_AFTER = 0.0005
"""The timeout of a request the sender gives up on (``failure_rate``): half a millisecond."""
CHAOS_MALFORMED_RATE = 0.02
CHAOS_FAILURE_RATE = 0.02
"""The rates ``chaos`` mode uses unless the run sets its own."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One simulator run (docs/api.md "Simulator"; every field has a default)."""

    scenario: str = "default"
    mode: Mode = "steady"
    rate: float = 20.0
    """Samples per second."""
    targets: tuple[str, ...] = ()
    """The services to simulate (empty: all of the fleet)."""
    duration_seconds: float | None = None
    """None: until stopped."""
    failure_rate: float | None = None
    """The share of requests given up on at once (None: 0, or 2% in chaos mode)."""
    malformed_rate: float | None = None
    """The share of requests sent malformed (None: 0, or 2% in chaos mode)."""
    batch: bool = True
    """One batch request per step, or one request per sample."""
    seed: int = 0
    burst_at_seconds: float | None = None
    burst_seconds: float | None = None

    @property
    def failures(self) -> float:
        if self.failure_rate is not None:
            return self.failure_rate
        return CHAOS_FAILURE_RATE if self.mode == "chaos" else 0.0

    @property
    def malformed(self) -> float:
        if self.malformed_rate is not None:
            return self.malformed_rate
        return CHAOS_MALFORMED_RATE if self.mode == "chaos" else 0.0

    def shape(self) -> Shape:
        shape = Shape()
        if self.burst_at_seconds is not None:
            shape = replace(shape, burst_at=self.burst_at_seconds)
        if self.burst_seconds is not None:
            shape = replace(shape, burst_for=self.burst_seconds)
        return shape

    def fleet(self) -> Fleet:
        """A fresh fleet for this run: its services, mode, seed and timing."""
        unknown = sorted(set(self.targets) - {s.name for s in DEFAULT_FLEET})
        if unknown:
            known = ", ".join(s.name for s in DEFAULT_FLEET)
            raise ValueError(f"unknown service(s) {', '.join(unknown)}: the fleet has {known}")
        specs = tuple(s for s in DEFAULT_FLEET if not self.targets or s.name in self.targets)
        return Fleet(specs, mode=self.mode, seed=self.seed, shape=self.shape())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = list(self.targets)
        out["failure_rate"] = self.failures
        out["malformed_rate"] = self.malformed
        return out


@dataclass(slots=True)
class Counts:
    """What a run sent and how Vigil answered (generated = succeeded + rejected + failed
    once every request has been answered)."""

    generated: int = 0
    succeeded: int = 0
    rejected: int = 0
    failed: int = 0
    requests: int = 0
    malformed: int = 0
    abandoned: int = 0
    server_errors: int = 0
    """Requests Vigil answered with a 5xx: never expected, whatever was sent."""
    steps: int = 0
    last_error: str | None = None
    """The latest unexpected answer or error (a 401, a refused connection), for the operator."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sample_json(sample: Sample) -> dict[str, Any]:
    return {
        "name": sample.name,
        "value": sample.value,
        "target": sample.target,
        "tags": sample.tags,
    }


def _malformed(items: list[dict[str, Any]], chooser: random.Random) -> list[Any]:
    """``items`` with one of them broken the way a buggy agent breaks things (each way is
    one Vigil must refuse)."""
    broken: list[Any] = [dict(item) for item in items]
    i = chooser.randrange(len(broken))
    kind = chooser.randrange(4)
    if kind == 0:
        broken[i]["value"] = "high"
    elif kind == 1:
        del broken[i]["name"]
    elif kind == 2:
        broken[i] = f"{broken[i]['name']}={broken[i]['value']}"  # a line of text, not JSON
    else:
        broken[i]["value"] = None
    return broken


@dataclass(slots=True)
class Sender:
    """Drives one run of ``fleet`` into the Vigil that ``client`` points at (its base URL
    and any API key header set on it).

    ``sync``, when given, is awaited about every ``sync_every`` seconds between steps: a
    generator in another process uses it to follow the fleet Vigil's remediations change.
    """

    fleet: Fleet
    config: RunConfig
    client: httpx.AsyncClient
    sync: Callable[[], Awaitable[None]] | None = None
    sync_every: float = 1.0
    counts: Counts = field(default_factory=Counts)
    _chooser: random.Random = field(init=False)
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        # Its own generator: what is broken is reproducible and does not shift the load.
        self._chooser = random.Random(self.config.seed + 1)

    async def run(self) -> Counts:
        """Send until the run's duration is over (or forever); cancel the task to stop it.
        Requests still in flight when it ends are waited for (briefly), then counted."""
        started = time.monotonic()
        next_step = started
        next_sync = started
        limit = asyncio.Semaphore(SINGLE_CONCURRENCY)
        try:
            while True:
                now = time.monotonic()
                elapsed = now - started
                if (
                    self.config.duration_seconds is not None
                    and elapsed >= self.config.duration_seconds
                ):
                    break
                if self.sync is not None and now >= next_sync:
                    next_sync = now + self.sync_every
                    try:
                        await self.sync()
                    except Exception as exc:  # the load goes on; the fleet is just stale
                        log.warning("simulator.sync_failed", error=str(exc))
                samples = self.fleet.step(elapsed)
                self.counts.steps += 1
                if self.config.batch:
                    self.counts.generated += len(samples)
                    await self._send_batch(samples)
                else:
                    for sample in samples:
                        await limit.acquire()
                        self.counts.generated += 1  # counted as it goes: a stop may come
                        task = asyncio.create_task(self._send_one(sample, limit))
                        self._in_flight.add(task)
                        task.add_done_callback(self._in_flight.discard)
                next_step += max(len(samples), 1) / self.config.rate
                delay = next_step - time.monotonic()
                if self.config.duration_seconds is not None:  # a slow rate still ends on time
                    delay = min(delay, started + self.config.duration_seconds - time.monotonic())
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    next_step = time.monotonic()  # behind: do not try to catch up in a rush
        finally:
            await self._drain()
        return self.counts

    async def _drain(self) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=REQUEST_TIMEOUT + 1)

    def _chaos(self) -> tuple[bool, bool]:
        """(malformed, abandoned) for the next request."""
        malformed = self._chooser.random() < self.config.malformed
        abandoned = self._chooser.random() < self.config.failures
        return malformed, abandoned

    async def _send_batch(self, samples: list[Sample]) -> None:
        if not samples:
            return
        items: list[Any] = [_sample_json(s) for s in samples]
        malformed, abandoned = self._chaos()
        if malformed:
            items = _malformed(items, self._chooser)
        body = orjson.dumps({"metrics": items})
        await self._post("/api/v1/ingest/batch", body, len(samples), malformed, abandoned)

    async def _send_one(self, sample: Sample, limit: asyncio.Semaphore) -> None:
        try:
            items: list[Any] = [_sample_json(sample)]
            malformed, abandoned = self._chaos()
            if malformed:
                items = _malformed(items, self._chooser)
            await self._post("/api/v1/ingest", orjson.dumps(items[0]), 1, malformed, abandoned)
        finally:
            limit.release()

    async def _post(
        self, path: str, body: bytes, samples: int, malformed: bool, abandoned: bool
    ) -> None:
        counts = self.counts
        counts.requests += 1
        counts.malformed += malformed
        counts.abandoned += abandoned
        timeout = ABANDON_AFTER if abandoned else REQUEST_TIMEOUT
        try:
            response = await self.client.post(
                path,
                content=body,
                headers={"content-type": "application/json"},
                timeout=timeout,
            )
        except asyncio.CancelledError:
            counts.failed += samples  # the run was stopped with this request in flight
            raise
        except httpx.HTTPError as exc:
            counts.failed += samples
            if not abandoned:
                counts.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
            return
        code = response.status_code
        if code < 300:
            counts.succeeded += samples
            return
        if code < 500:
            counts.rejected += samples
        else:
            counts.failed += samples
            counts.server_errors += 1
        if code >= 500 or not malformed:
            counts.last_error = f"{path} answered {code}: {response.text[:200]}"
