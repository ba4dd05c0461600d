"""The simulated fleet's API: read, scale, restart; refused in production unless enabled."""

from __future__ import annotations

import httpx
import pytest

from tests.api.support import audit_rows, table_counts
from vigil.container import Container

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
    assert scaled.json() == {"ok": True, "service": "web", "replicas": 4}
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


@pytest.mark.parametrize("settings_overrides", [{"env": "production"}])
async def test_production_refuses_the_simulator(client: httpx.AsyncClient) -> None:
    response = await client.get(FLEET)
    assert response.status_code == 403
    assert "VIGIL_SIMULATOR_ENABLED" in response.json()["detail"]
    assert (await client.post(f"{FLEET}/web/scale", json={"delta": 1})).status_code == 403


@pytest.mark.parametrize("settings_overrides", [{"env": "production", "simulator_enabled": True}])
async def test_production_may_enable_the_simulator(client: httpx.AsyncClient) -> None:
    assert (await client.get(FLEET)).status_code == 200
