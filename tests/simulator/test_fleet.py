"""The simulated fleet's load model: seeded, so every expectation here is exact."""

from __future__ import annotations

import pytest

from vigil.simulator.fleet import MAX_REPLICAS, Fleet, Shape


def cpu(fleet: Fleet, service: str) -> float:
    return fleet.services[service].cpu_usage


def test_the_same_seed_gives_the_same_run() -> None:
    runs = []
    for _ in range(2):
        fleet = Fleet(mode="chaos", seed=7)
        runs.append([fleet.step(float(t)) for t in range(50)])
    assert runs[0] == runs[1]
    other = Fleet(mode="chaos", seed=8)
    assert [other.step(float(t)) for t in range(50)] != runs[0]


def test_cpu_is_load_over_replicas_and_a_scale_up_brings_it_down() -> None:
    fleet = Fleet(mode="steady", seed=1)
    values = []
    for t in range(20):
        fleet.step(float(t))
        values.append(cpu(fleet, "web"))
    average = sum(values) / len(values)
    assert 45 < average < 55  # load 100 over 2 replicas
    assert fleet.scale("web", delta=2) == 4
    after = []
    for t in range(20):
        fleet.step(float(t))
        after.append(cpu(fleet, "web"))
    assert 20 < sum(after) / len(after) < 30


def test_a_burst_pushes_web_past_90_and_then_ends() -> None:
    fleet = Fleet(mode="burst", seed=2, shape=Shape(burst_at=10, burst_for=30))
    before = [(fleet.step(float(t)), cpu(fleet, "web"))[1] for t in range(10)]
    during = [(fleet.step(float(t)), cpu(fleet, "web"))[1] for t in range(10, 40)]
    hot_latency = fleet.services["web"].latency_ms
    after = [(fleet.step(float(t)), cpu(fleet, "web"))[1] for t in range(40, 50)]
    assert max(before) < 70
    assert min(during) > 90
    assert max(after) < 70
    assert hot_latency > 4 * fleet.services["web"].latency_ms  # latency rises with CPU


def test_a_ramp_climbs_and_holds() -> None:
    fleet = Fleet(mode="ramp", seed=3, shape=Shape(ramp_for=100, ramp_factor=2.0))
    assert fleet.factor(0) == 1.0
    assert fleet.factor(50) == 1.5
    assert fleet.factor(100) == fleet.factor(500) == 2.0


def test_samples_carry_the_service_or_the_host_as_target() -> None:
    fleet = Fleet(seed=4)
    samples = fleet.step(0.0)
    targets = {(s.name, s.target) for s in samples}
    assert ("cpu_usage", "web") in targets
    assert ("latency_p99_ms", "api") in targets
    assert ("memory_percent", "web-03") in targets
    assert ("heartbeat", "db-01") in targets
    assert ("cpu_usage", "web-01") not in targets
    # Four web hosts and one each for api and db: memory and heartbeat per host.
    assert sum(1 for s in samples if s.name == "heartbeat") == 6


def test_memory_drifts_up_until_a_restart() -> None:
    fleet = Fleet(seed=5)
    first = fleet.step(0.0)
    for t in range(1, 200):
        fleet.step(float(t))
    start = next(s.value for s in first if s.target == "api-01" and s.name == "memory_percent")
    assert fleet.services["api"].memory["api-01"] > start + 20
    fleet.restart("api")
    assert fleet.services["api"].memory["api-01"] == 40.0
    assert fleet.snapshot()["services"]["api"]["restarts"] == 1


def test_chaos_spikes_load_and_silences_heartbeats() -> None:
    shape = Shape(spike_chance=0.2, silence_chance=0.1, silence_seconds=(5.0, 10.0))
    fleet = Fleet(mode="chaos", seed=6, shape=shape)
    heartbeats = []
    spikes = 0
    for t in range(200):
        samples = fleet.step(float(t))
        heartbeats.append(sum(1 for s in samples if s.name == "heartbeat"))
        spikes += any(s.spike > 1.0 for s in fleet.services.values())
    assert min(heartbeats) < 6  # some service went quiet
    assert spikes > 10
    for name in fleet.services:
        fleet.restart(name)  # a restart brings heartbeats back
    assert all(s["heartbeats"] for s in fleet.snapshot()["services"].values())


def test_chaos_follows_time_not_the_number_of_steps() -> None:
    """Ten steps a second or one: the same share of time spiking and silent."""

    def shares(steps_per_second: int) -> tuple[float, float]:
        fleet = Fleet(mode="chaos", seed=9, shape=Shape(spike_chance=0.1, silence_chance=0.05))
        ticks = 600 * steps_per_second
        spiking = silent = 0
        for n in range(ticks):
            fleet.step(n / steps_per_second)
            spiking += fleet.services["web"].spike > 1.0
            silent += not fleet.heartbeating("web")
        return spiking / ticks, silent / ticks

    slow, fast = shares(1), shares(10)
    for a, b in zip(slow, fast, strict=True):
        assert 0.05 < a < 0.9
        assert abs(a - b) < 0.2, (slow, fast)


def test_memory_grows_with_time_not_steps() -> None:
    one, many = Fleet(seed=3), Fleet(seed=3)
    one.step(0.0)
    one.step(100.0)
    for n in range(1001):
        many.step(n / 10)
    a = sum(one.services["web"].memory.values())
    b = sum(many.services["web"].memory.values())
    assert abs(a - b) < 0.25 * a


def test_scale_bounds_and_errors() -> None:
    fleet = Fleet(seed=0)
    assert fleet.scale("db", delta=-5) == 1
    assert fleet.scale("db", replicas=1000) == MAX_REPLICAS
    with pytest.raises(ValueError, match="exactly one"):
        fleet.scale("db")
    with pytest.raises(KeyError, match="no service 'cache'"):
        fleet.scale("cache", delta=1)
    with pytest.raises(ValueError, match="unknown mode"):
        Fleet(mode="storm")  # type: ignore[arg-type]
