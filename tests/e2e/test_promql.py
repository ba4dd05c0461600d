"""A promql policy against a real Prometheus: it fires after its ``for`` and clears when the
series goes; with Prometheus killed mid-episode nothing resolves and no verification fails,
and once Prometheus is back everything goes on; a backtest over the last minutes replays it.

Prometheus (Debian's ``prometheus``) runs as the test's child on a free port with its own
config and data dir, scraping every second a tiny endpoint the test serves, whose gauge the
test sets. Vigil runs in-process on the test's database; the test drives the runner's passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_episodes import complete
from tests.e2e.prometheus import Exporter, running_prometheus, scraping
from tests.helpers import wait_for_async
from vigil.clock import Clock, SystemClock
from vigil.container import Container
from vigil.local import free_port

DOWN = 'vigil_test_down{host="web-1"}'
QUERY = "max_over_time(vigil_test_down[2s]) > 0"
"""Down at some time within the last two seconds: a restarted Prometheus, which scrapes
again only some seconds after it starts, does not answer with the sample it had before."""
POLICY: dict[str, Any] = {
    "name": "host-down",
    "auto_remediate": True,
    "condition": {"type": "promql", "query": QUERY, "for": "2s"},
    "action": "scale-up",
    "cooldown_seconds": 0,
    "verify": {"within_seconds": 3},
}


@pytest.fixture
def gauge() -> Iterator[Exporter]:
    served = Exporter({DOWN: 0.0})
    yield served
    served.close()


@pytest.fixture
def prometheus_port() -> int:
    return free_port()


@pytest.fixture
def settings_overrides(prometheus_port: int) -> dict[str, Any]:
    return {
        "prometheus_url": f"http://127.0.0.1:{prometheus_port}",
        "prometheus_timeout_seconds": 2,
    }


@pytest.fixture
def clock() -> Clock:
    """Real time: Prometheus is asked about now."""
    return SystemClock()


async def _phase(client: httpx.AsyncClient) -> str | None:
    body = (await client.get("/api/v1/policies/host-down/state")).json()
    return next((t["state"] for t in body["targets"] if t["target"] == "web-1"), None)


async def _pass_until(container: Container, client: httpx.AsyncClient, phase: str) -> str:
    async def reached() -> str | None:
        await container.runner.run_once()
        found = await _phase(client)
        return found if found == phase else None

    return await wait_for_async(reached, what=f"web-1 {phase}", within=20, interval=0.2)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_promql_policy_against_a_real_prometheus(
    client: httpx.AsyncClient,
    container: Container,
    gauge: Exporter,
    prometheus_port: int,
    tmp_path: Path,
) -> None:
    started = container.clock.now()
    with running_prometheus(
        tmp_path, scraping(gauge.address, job="hosts"), port=prometheus_port
    ) as prometheus:
        response = await client.post("/api/v1/policies", json=POLICY)
        assert response.status_code == 201, response.text
        bad = {**POLICY, "name": "bad", "condition": {"type": "promql", "query": "rate(x["}}
        response = await client.post("/api/v1/policies", json=bad)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "condition", "query"]
        assert "parse error" in response.json()["detail"][0]["msg"], "Prometheus's own parser"

        gauge.values[DOWN] = 1
        await _pass_until(container, client, "pending")
        pending_at = container.clock.now()
        await _pass_until(container, client, "firing")
        assert container.clock.now() - pending_at >= timedelta(seconds=1.5), "for: 2s"
        actions = (await client.get("/api/v1/actions", params={"policy": "host-down"})).json()
        [action] = actions["actions"]
        assert action["target"] == "web-1"
        await complete(container, action["id"])

        prometheus.popen.kill()  # mid-episode, the TSDB goes away
        prometheus.popen.wait()
        gauge.values[DOWN] = 0
        for _ in range(2):
            await container.runner.run_once()
        status = (await client.get("/api/v1/policies/runner/status")).json()["runner"]
        assert status["promql"]["unavailable"] == ["host-down"]

        # Past the verification window while Prometheus is away: nothing resolves, and the
        # verification waits.
        deadline = container.clock.now() + timedelta(seconds=3.5)
        while container.clock.now() < deadline:
            await container.runner.run_once()
            await asyncio.sleep(0.2)
        assert await _phase(client) == "firing"
        detail = (await client.get(f"/api/v1/actions/{action['id']}")).json()
        assert detail["verification"] is None
        metrics = (await client.get("/metrics")).text
        assert 'vigil_promql_queries_total{result="unavailable"}' in metrics

    with running_prometheus(tmp_path, scraping(gauge.address, job="hosts"), port=prometheus_port):
        await _pass_until(container, client, "resolved")
        detail = (await client.get(f"/api/v1/actions/{action['id']}")).json()
        assert detail["verification"]["result"] == "verified", "the outage did not count"
        status = (await client.get("/api/v1/policies/runner/status")).json()["runner"]
        assert status["promql"]["unavailable"] == []

        body = {"from": started.isoformat(), "to": container.clock.now().isoformat()}
        response = await client.post("/api/v1/policies/host-down/backtest", json=body)
        assert response.status_code == 200, response.text
        replay = response.json()
        assert replay["summary"]["acted"] >= 1
        assert replay["decisions"][0]["target"] == "web-1"
        assert replay["decisions"][0]["outcome"] == "acted"
