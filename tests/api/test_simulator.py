"""The simulated fleet's API: read, scale, restart; refused in production unless enabled."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.support import audit_rows, table_counts
from tests.helpers import wait_for_async
from vigil.access.keys import create_key
from vigil.access.roles import Role
from vigil.api.routes.simulator import StartIn
from vigil.container import Container
from vigil.observability.audit import Actor
from vigil.simulator.drive import drive
from vigil.simulator.fleet import DEFAULT_FLEET, MODES
from vigil.simulator.sender import RunConfig

FLEET = "/api/v1/simulator/fleet"


async def test_the_fleet_scales_and_restarts(
    client: httpx.AsyncClient, container: Container
) -> None:
    fleet = (await client.get(FLEET)).json()["services"]
    assert fleet["web"]["replicas"] == 2
    assert fleet["web"]["hosts"] == ["web-01", "web-02", "web-03", "web-04"]
    assert set(fleet) == {"web", "api", "db"}

    scaled = await client.post(f"{FLEET}/web/scale", json={"delta": 2})
    assert scaled.status_code == 200, scaled.text
    assert scaled.json() == {"ok": True, "service": "web", "replicas_before": 2, "replicas": 4}
    assert (await client.post(f"{FLEET}/web/scale", json={"replicas": 3})).json()["replicas"] == 3
    assert (await client.get(FLEET)).json()["services"]["web"]["replicas"] == 3

    restarted = await client.post(f"{FLEET}/api/restart")
    assert restarted.json() == {"ok": True, "service": "api", "restarts": 1}
    kinds = [(r["kind"], r["subject"]) for r in await audit_rows(container)]
    assert ("simulator.scaled", "service:web") in kinds
    assert ("simulator.restarted", "service:api") in kinds


@pytest.mark.parametrize(
    "body", [{}, {"delta": 1, "replicas": 2}, {"replicas": 0}, {"delta": "2"}, {"delta": 1000}]
)
async def test_a_bad_scale_is_422_and_changes_nothing(
    client: httpx.AsyncClient, container: Container, body: dict[str, object]
) -> None:
    before = await table_counts(container)
    response = await client.post(f"{FLEET}/web/scale", json=body)
    assert response.status_code == 422, response.text
    assert container.fleet.services["web"].replicas == 2
    assert await table_counts(container) == before


async def test_an_unknown_service_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{FLEET}/cache/scale", json={"delta": 1})).status_code == 404
    assert (await client.post(f"{FLEET}/cache/restart")).status_code == 404


async def test_a_host_names_its_service(client: httpx.AsyncClient) -> None:
    scaled = await client.post(f"{FLEET}/web-03/scale", json={"delta": 1})
    assert scaled.json() == {"ok": True, "service": "web", "replicas_before": 2, "replicas": 3}
    restarted = await client.post(f"{FLEET}/db-01/restart")
    assert restarted.json() == {"ok": True, "service": "db", "restarts": 1}


@pytest.mark.parametrize("settings_overrides", [{"env": "production"}])
async def test_production_refuses_the_simulator(client: httpx.AsyncClient) -> None:
    response = await client.get(FLEET)
    assert response.status_code == 403
    assert "VIGIL_SIMULATOR_ENABLED" in response.json()["detail"]
    assert (await client.post(f"{FLEET}/web/scale", json={"delta": 1})).status_code == 403


@pytest.mark.parametrize("settings_overrides", [{"env": "production", "simulator_enabled": True}])
async def test_production_may_enable_the_simulator(client: httpx.AsyncClient) -> None:
    assert (await client.get(FLEET)).status_code == 200


START = "/api/v1/simulator/start"
STOP = "/api/v1/simulator/stop"
STATUS = "/api/v1/simulator/status"


@pytest.fixture
def loopback(app: FastAPI, container: Container) -> None:
    """The simulator's requests go to this app (the tests run no socket)."""
    container.simulator.transport = httpx.ASGITransport(app=app)


async def until_stopped(client: httpx.AsyncClient, within: float = 10.0) -> dict[str, Any]:
    async def stopped() -> dict[str, Any] | None:
        status: dict[str, Any] = (await client.get(STATUS)).json()
        return None if status["running"] else status

    return await wait_for_async(stopped, what="the simulator to stop", within=within)


@pytest.mark.usefixtures("loopback")
async def test_a_run_sends_the_fleet_s_metrics_through_ingest(
    client: httpx.AsyncClient, container: Container
) -> None:
    idle = (await client.get(STATUS)).json()
    assert idle["running"] is False
    assert idle["events_generated"] == 0
    before = (await table_counts(container))["metrics"]

    started = await client.post(
        START, json={"rate": 400, "duration_seconds": 0.3, "scenario": "smoke", "seed": 3}
    )
    assert started.status_code == 200, started.text
    assert started.json()["running"] is True
    assert started.json()["config"]["seed"] == 3
    done = await until_stopped(client)

    assert done["stop_reason"] == "finished"
    assert done["scenario"] == "smoke"
    assert done["mode"] == "steady"
    assert done["events_generated"] >= 18  # at least one step of the whole fleet
    assert done["events_succeeded"] == done["events_generated"]
    assert done["events_failed"] == done["events_rejected"] == done["server_errors"] == 0
    stored = (await table_counts(container))["metrics"] - before
    assert stored == done["events_succeeded"]
    web = done["fleet"]["services"]["web"]
    assert web["replicas"] == 2
    assert 30 < web["cpu_usage"] < 70
    kinds = [r["kind"] for r in await audit_rows(container)]
    assert "simulator.started" in kinds


@pytest.mark.usefixtures("loopback")
async def test_one_run_at_a_time_and_stop_ends_it(
    client: httpx.AsyncClient, container: Container
) -> None:
    assert (await client.post("/api/v1/ui/simulator/start", json={"rate": 50})).status_code == 200
    again = await client.post(START, json={})
    assert again.status_code == 409
    assert "already running" in again.json()["detail"]
    assert (await client.get("/api/v1/ui/simulator/status")).json()["running"] is True

    stopped = await client.post("/api/v1/ui/simulator/stop")
    assert stopped.status_code == 200
    final = stopped.json()
    assert final["running"] is False
    assert final["stop_reason"] == "stopped"
    # Stopped mid-run, every sample is still counted once.
    answered = final["events_succeeded"] + final["events_rejected"] + final["events_failed"]
    assert final["events_generated"] == answered
    assert (await client.post(STOP)).json()["running"] is False  # stopping twice is fine
    kinds = [r["kind"] for r in await audit_rows(container)]
    assert kinds.count("simulator.stopped") == 1


@pytest.mark.usefixtures("loopback")
@pytest.mark.parametrize("batch", [True, False])
async def test_two_starts_at_once_begin_one_run(client: httpx.AsyncClient, batch: bool) -> None:
    body = {"rate": 2000, "batch": batch}
    # A run before, so the next start also closes its client first.
    assert (await client.post(START, json=body)).status_code == 200
    await client.post(STOP)
    first, second = await asyncio.gather(
        client.post(START, json=body), client.post(START, json=body)
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    final = (await client.post(STOP)).json()
    assert final["running"] is False
    answered = final["events_succeeded"] + final["events_rejected"] + final["events_failed"]
    assert final["events_generated"] == answered > 0


@pytest.mark.usefixtures("loopback")
async def test_malformed_payloads_are_rejected_never_5xx(client: httpx.AsyncClient) -> None:
    body = {"mode": "chaos", "rate": 500, "duration_seconds": 0.3, "malformed_rate": 1.0}
    assert (await client.post(START, json=body)).status_code == 200
    done = await until_stopped(client)
    assert done["malformed"] == done["requests"] > 0
    assert done["events_rejected"] == done["events_generated"]
    assert done["events_succeeded"] == done["server_errors"] == 0


@pytest.mark.usefixtures("loopback")
async def test_single_metric_requests_and_chosen_services(client: httpx.AsyncClient) -> None:
    body = {"rate": 300, "duration_seconds": 0.2, "batch": False, "targets": ["web"]}
    assert (await client.post(START, json=body)).status_code == 200
    done = await until_stopped(client)
    assert set(done["fleet"]["services"]) == {"web"}
    # web: cpu and latency, then memory and a heartbeat from each of four hosts.
    assert done["events_generated"] % 10 == 0
    assert done["requests"] == done["events_generated"] == done["events_succeeded"]


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "storm"},
        {"rate": 0},
        {"rate": -5},
        {"targets": ["cache"]},
        {"failure_rate": 1.5},
        {"duration_seconds": 0},
        {"rat": 10},
        {"scenario": "Has Spaces"},
        [1, 2],
    ],
)
async def test_a_bad_start_is_422_and_starts_nothing(
    client: httpx.AsyncClient, container: Container, body: Any
) -> None:
    before = await table_counts(container)
    response = await client.post(START, json=body)
    assert response.status_code == 422, response.text
    assert container.simulator.running is False
    assert await table_counts(container) == before


@pytest.mark.parametrize("settings_overrides", [{"env": "production"}])
async def test_production_refuses_to_start(client: httpx.AsyncClient) -> None:
    assert (await client.post(START, json={})).status_code == 403
    assert (await client.get(STATUS)).status_code == 403


@pytest.mark.usefixtures("loopback")
@pytest.mark.parametrize("settings_overrides", [{"auth": "required"}])
async def test_a_run_ingests_when_keys_are_required(
    client: httpx.AsyncClient, container: Container
) -> None:
    async with container.database.write() as conn:
        _, key = await create_key(
            conn, name="ops", role=Role.OPERATOR, now=container.clock.now(), actor=Actor()
        )
    headers = {"x-api-key": key}
    assert (await client.post(START, json={})).status_code == 401
    body = {"rate": 400, "duration_seconds": 0.2}
    assert (await client.post(START, json=body, headers=headers)).status_code == 200

    async def stopped() -> dict[str, Any] | None:
        status: dict[str, Any] = (await client.get(STATUS, headers=headers)).json()
        return None if status["running"] else status

    status = await wait_for_async(stopped, what="the simulator to stop")
    assert status["events_succeeded"] == status["events_generated"] > 0, status
    # The internal key only ingests: it is no way into the rest of the API.
    internal = {"x-api-key": container.keys.internal_key}
    assert (await client.get(STATUS, headers=internal)).status_code == 403


def test_the_start_body_knows_every_mode_and_service() -> None:
    schema = StartIn.model_json_schema()
    assert set(schema["properties"]["mode"]["enum"]) == set(MODES)
    assert set(schema["properties"]["targets"]["items"]["enum"]) == {s.name for s in DEFAULT_FLEET}


@pytest.mark.usefixtures("loopback")
async def test_two_stops_at_once_audit_one(client: httpx.AsyncClient, container: Container) -> None:
    assert (await client.post(START, json={"rate": 100})).status_code == 200
    first, second = await asyncio.gather(client.post(STOP), client.post(STOP))
    assert first.status_code == second.status_code == 200
    kinds = [r["kind"] for r in await audit_rows(container)]
    assert kinds.count("simulator.stopped") == 1


@pytest.mark.parametrize("settings_overrides", [{"auth": "required"}])
async def test_vigil_simulate_sends_with_one_key_and_follows_with_another(
    app: FastAPI, container: Container
) -> None:
    keys = {}
    async with container.database.write() as conn:
        for role in (Role.AGENT, Role.VIEWER):
            _, keys[role] = await create_key(
                conn, name=role.value, role=role, now=container.clock.now(), actor=Actor()
            )
    container.fleet.scale("web", replicas=5)
    transport = httpx.ASGITransport(app=app)
    config = RunConfig(rate=500, duration_seconds=0.2)

    alone = await drive(
        "http://vigil.test", config, api_key=keys[Role.AGENT], live=False, transport=transport
    )
    assert alone.counts.succeeded == alone.counts.generated > 0
    assert alone.following is False  # an agent may not read the fleet
    assert alone.fleet.services["web"].replicas == 2

    both = await drive(
        "http://vigil.test",
        config,
        api_key=keys[Role.AGENT],
        follow_key=keys[Role.VIEWER],
        live=False,
        transport=transport,
    )
    assert both.counts.succeeded == both.counts.generated > 0
    assert both.following is True
    assert both.fleet.services["web"].replicas == 5
