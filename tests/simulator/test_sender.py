"""The load generator's bookkeeping: every sample counted once, by the answer it got."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from vigil.simulator.fleet import Fleet
from vigil.simulator.sender import RunConfig, Sender


def sender(config: RunConfig, answer: Any) -> tuple[Sender, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        result = answer(request, len(seen))
        if isinstance(result, Exception):
            raise result
        return httpx.Response(result)

    client = httpx.AsyncClient(base_url="http://vigil.test", transport=httpx.MockTransport(handle))
    return Sender(config.fleet(), config, client), seen


async def test_batches_carry_the_fleet_s_samples_and_count_by_answer() -> None:
    answers = {1: 201, 2: 422, 3: 503}

    def answer(request: httpx.Request, n: int) -> Any:
        return answers.get(n, httpx.ConnectError("refused") if n == 4 else 201)

    config = RunConfig(rate=10_000, duration_seconds=0.2, seed=2)
    run, seen = sender(config, answer)
    counts = await run.run()

    body = json.loads(seen[0].content)
    per_step = len(body["metrics"])
    assert per_step == 18  # web: 2 + 4x2, api: 2 + 2, db: 2 + 2
    assert {m["target"] for m in body["metrics"]} == {
        "web", "api", "db", "web-01", "web-02", "web-03", "web-04", "api-01", "db-01",
    }  # fmt: skip
    assert all(r.url.path == "/api/v1/ingest/batch" for r in seen)
    assert counts.requests == len(seen) == counts.steps
    assert counts.rejected == per_step
    assert counts.server_errors == 1
    assert counts.failed == 2 * per_step  # the 503 and the refused connection
    assert counts.succeeded == counts.generated - 3 * per_step
    assert counts.last_error is not None


async def test_malformed_requests_break_one_sample_and_are_counted() -> None:
    def answer(request: httpx.Request, n: int) -> int:
        try:
            items = json.loads(request.content)["metrics"]
        except ValueError:
            return 422
        ok = all(
            isinstance(i, dict) and isinstance(i.get("value"), float) and "name" in i for i in items
        )
        return 201 if ok else 422

    config = RunConfig(rate=10_000, duration_seconds=0.05, malformed_rate=1.0, failure_rate=0.0)
    run, _ = sender(config, answer)
    counts = await run.run()
    assert counts.malformed == counts.requests > 0
    assert counts.rejected == counts.generated
    assert counts.last_error is None  # rejecting a malformed request is expected


async def test_single_requests_one_per_sample() -> None:
    config = RunConfig(rate=10_000, duration_seconds=0.02, batch=False, targets=("db",))
    run, seen = sender(config, lambda request, n: 201)
    counts = await run.run()
    assert {r.url.path for r in seen} == {"/api/v1/ingest"}
    assert counts.requests == counts.generated == counts.succeeded == len(seen)
    assert counts.generated % 4 == 0  # db: cpu, latency, memory and heartbeat of db-01


def test_chaos_breaks_things_by_default_and_other_modes_do_not() -> None:
    assert RunConfig(mode="chaos").malformed == RunConfig(mode="chaos").failures == 0.02
    assert RunConfig(mode="burst").malformed == RunConfig(mode="burst").failures == 0.0
    assert RunConfig(mode="chaos", malformed_rate=0.0).malformed == 0.0


def test_an_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        RunConfig(targets=("cache",)).fleet()


def test_the_fleet_adopts_another_copy_s_replicas_and_restarts() -> None:
    ours, theirs = Fleet(seed=1), Fleet(seed=2)
    theirs.scale("web", replicas=6)
    theirs.restart("api")
    ours.services["api"].memory["api-01"] = 90.0
    ours.adopt(theirs.snapshot())
    assert ours.services["web"].replicas == 6
    assert ours.services["api"].restarts == 1
    assert ours.services["api"].memory["api-01"] == 40.0
    ours.adopt(theirs.snapshot())  # the same restart is not applied twice
    assert ours.services["api"].restarts == 1
    ours.adopt({"services": {"cache": {"replicas": 3}, "db": {"replicas": 0}}})
    assert "cache" not in ours.services
    assert ours.services["db"].replicas == 1


def test_service_of_a_host() -> None:
    fleet = Fleet()
    assert fleet.service_of("web-03") == "web"
    assert fleet.service_of("db") == "db"
    assert fleet.service_of("cache-01") is None
