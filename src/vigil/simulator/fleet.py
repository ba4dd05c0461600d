"""The simulated fleet and its load model: pure and seeded, so a run is reproducible.

Each service has replicas and a load (in CPU-percent of one replica, so ``cpu_usage`` is
about ``load / replicas``, plus noise). Memory drifts up on every host until the service is
restarted; latency rises steeply with CPU; every live host sends a heartbeat. The mode
shapes the load over time: ``steady``, ``burst`` (a step up, then back), ``ramp`` (a slow
climb) or ``chaos`` (random spikes and a service that stops sending heartbeats).

Service-level metrics (``cpu_usage``, ``latency_p99_ms``) carry the service as their target
(``web``), host-level ones (``memory_percent``, ``heartbeat``) the host (``web-01``), so one
scale-up answers one hot service (docs/api.md "Simulator").
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["steady", "burst", "ramp", "chaos"]
MODES: tuple[Mode, ...] = ("steady", "burst", "ramp", "chaos")
MAX_REPLICAS = 100


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    hosts: tuple[str, ...]
    replicas: int
    load: float
    """Normal load, in CPU-percent of one replica."""


DEFAULT_FLEET: tuple[ServiceSpec, ...] = (
    ServiceSpec("web", tuple(f"web-{i:02d}" for i in range(1, 5)), replicas=2, load=100.0),
    ServiceSpec("api", ("api-01",), replicas=2, load=60.0),
    ServiceSpec("db", ("db-01",), replicas=1, load=40.0),
)


@dataclass(frozen=True, slots=True)
class Shape:
    """The timing of the modes (seconds since the run started)."""

    burst_at: float = 10.0
    burst_for: float = 60.0
    burst_factor: float = 1.9
    ramp_for: float = 120.0
    ramp_factor: float = 2.0
    spike_chance: float = 0.05
    """Chaos: the chance, each second, that a service's load spikes."""
    spike_factor: tuple[float, float] = (1.5, 2.5)
    spike_seconds: tuple[float, float] = (2.0, 6.0)
    silence_chance: float = 0.02
    """Chaos: the chance, each second, that a service stops sending heartbeats."""
    silence_seconds: tuple[float, float] = (10.0, 30.0)
    memory_drift: float = 0.4
    """The most a host's memory (percent) grows in a second; on average half that."""


@dataclass(slots=True)
class Service:
    name: str
    hosts: tuple[str, ...]
    replicas: int
    load: float
    memory: dict[str, float] = field(default_factory=dict)
    cpu_usage: float = 0.0
    latency_ms: float = 0.0
    spike: float = 1.0
    spike_until: float = 0.0
    silent_until: float = 0.0
    """Chaos: no heartbeats until this many seconds into the run."""
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    value: float
    target: str
    tags: dict[str, str]


class Fleet:
    """A fleet of services; :meth:`step` advances it and says what its agents would send."""

    def __init__(
        self,
        specs: tuple[ServiceSpec, ...] = DEFAULT_FLEET,
        *,
        mode: Mode = "steady",
        seed: int = 0,
        shape: Shape | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        self.mode: Mode = mode
        self.shape = shape or Shape()
        self._random = random.Random(seed)
        self.services: dict[str, Service] = {}
        for spec in specs:
            service = Service(spec.name, spec.hosts, spec.replicas, spec.load)
            service.memory = {host: 40.0 + self._random.uniform(0, 10) for host in spec.hosts}
            self.services[spec.name] = service
        self.now = 0.0
        """Seconds into the run, as of the latest step."""

    def factor(self, elapsed: float) -> float:
        """The mode's load multiplier ``elapsed`` seconds into the run (chaos spikes aside)."""
        s = self.shape
        if self.mode == "burst":
            return s.burst_factor if s.burst_at <= elapsed < s.burst_at + s.burst_for else 1.0
        if self.mode == "ramp":
            progress = min(1.0, max(0.0, elapsed / s.ramp_for))
            return 1.0 + (s.ramp_factor - 1.0) * progress
        return 1.0

    def step(self, elapsed: float) -> list[Sample]:
        """Advance to ``elapsed`` seconds into the run; the samples the fleet sends then.

        What happens over time (memory drift, chaos's spikes and silences) follows the
        seconds since the last step, not the number of steps, so the fleet behaves the same
        whatever rate it is sampled at."""
        seconds = max(0.0, elapsed - self.now)
        self.now = max(self.now, elapsed)
        factor = self.factor(elapsed)
        samples: list[Sample] = []
        for service in self.services.values():
            if self.mode == "chaos":
                self._chaos(service, seconds)
            load = service.load * factor * service.spike
            noise = self._random.gauss(0.0, 2.0)
            service.cpu_usage = round(min(100.0, max(0.0, load / service.replicas + noise)), 2)
            pressure = service.cpu_usage / 100.0
            service.latency_ms = round(40.0 * (1.0 + 9.0 * pressure**4) + abs(noise), 2)
            tags = {"service": service.name}
            samples.append(Sample("cpu_usage", service.cpu_usage, service.name, tags))
            samples.append(Sample("latency_p99_ms", service.latency_ms, service.name, tags))
            heartbeats = self.heartbeating(service.name)
            for host in service.hosts:
                drift = self._random.uniform(0.0, self.shape.memory_drift) * seconds
                service.memory[host] = round(min(100.0, service.memory[host] + drift), 2)
                host_tags = {"service": service.name, "host": host}
                samples.append(Sample("memory_percent", service.memory[host], host, host_tags))
                if heartbeats:
                    samples.append(Sample("heartbeat", 1.0, host, host_tags))
        return samples

    def heartbeating(self, name: str) -> bool:
        """Whether the service's hosts send heartbeats (chaos silences them for a while)."""
        return self._service(name).silent_until <= self.now

    def _chaos(self, service: Service, seconds: float) -> None:
        s = self.shape
        if service.spike_until and service.spike_until <= self.now:
            service.spike, service.spike_until = 1.0, 0.0
        if not service.spike_until and self._happens(s.spike_chance, seconds):
            service.spike = self._random.uniform(*s.spike_factor)
            service.spike_until = self.now + self._random.uniform(*s.spike_seconds)
        if self.heartbeating(service.name) and self._happens(s.silence_chance, seconds):
            service.silent_until = self.now + self._random.uniform(*s.silence_seconds)

    def _happens(self, chance_per_second: float, seconds: float) -> bool:
        """Whether an event with this chance each second happens within ``seconds``."""
        return self._random.random() < 1.0 - math.pow(1.0 - chance_per_second, seconds)

    def scale(self, name: str, *, delta: int | None = None, replicas: int | None = None) -> int:
        """Change a service's replicas (by ``delta`` or to ``replicas``, kept within 1 and
        :data:`MAX_REPLICAS`); the new count."""
        service = self._service(name)
        if (delta is None) == (replicas is None):
            raise ValueError("give exactly one of delta and replicas")
        wanted = service.replicas + delta if delta is not None else replicas
        assert wanted is not None
        service.replicas = min(MAX_REPLICAS, max(1, wanted))
        return service.replicas

    def restart(self, name: str) -> None:
        """Restart a service: memory back to its base, heartbeats flowing again."""
        service = self._service(name)
        service.memory = dict.fromkeys(service.hosts, 40.0)
        service.silent_until = 0.0
        service.restarts += 1

    def adopt(self, snapshot: dict[str, Any]) -> None:
        """Take the replicas and restarts of another copy of the fleet (``snapshot`` as
        :meth:`snapshot` gives it): a load generator in another process follows the fleet
        that Vigil's remediations change. Services it does not know are left alone."""
        for name, theirs in snapshot.get("services", {}).items():
            service = self.services.get(name)
            if service is None:
                continue
            replicas = theirs.get("replicas")
            if isinstance(replicas, int) and 1 <= replicas <= MAX_REPLICAS:
                service.replicas = replicas
            restarts = theirs.get("restarts")
            if isinstance(restarts, int) and restarts > service.restarts:
                self.restart(name)
                service.restarts = restarts

    def service_of(self, target: str) -> str | None:
        """The service ``target`` names: itself, or the service one of whose hosts it is."""
        if target in self.services:
            return target
        for service in self.services.values():
            if target in service.hosts:
                return service.name
        return None

    def _service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise KeyError(f"no service {name!r} in the fleet") from None

    def snapshot(self) -> dict[str, Any]:
        """The fleet as ``GET /api/v1/simulator/fleet`` shows it."""
        return {
            "services": {
                s.name: {
                    "replicas": s.replicas,
                    "cpu_usage": s.cpu_usage,
                    "latency_p99_ms": s.latency_ms,
                    "hosts": list(s.hosts),
                    "memory_percent": dict(s.memory),
                    "heartbeats": self.heartbeating(s.name),
                    "restarts": s.restarts,
                }
                for s in self.services.values()
            }
        }
