"""Access control: API keys with roles, on every route (the whole route table is walked with
each role, so a new route cannot be forgotten), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.support import audit_rows
from vigil.access.keys import create_key
from vigil.access.roles import INGEST_PATHS, Role
from vigil.container import Container
from vigil.observability.audit import Actor

# docs/api.md "Access control", restated here on purpose (not imported from the code): which
# roles each kind of route allows. Reads: viewer, operator, admin; ingest (OTLP's
# /v1/metrics too): agent, admin;
# operating: operator, admin; everything else (policies, keys): admin.
OPERATOR_ROUTES = {
    ("POST", "/api/v1/actions"),
    ("PUT", "/api/v1/actions/{action_id}/cancel"),
    ("POST", "/api/v1/actions/{action_id}/approve"),
    ("POST", "/api/v1/actions/{action_id}/reject"),
    ("POST", "/api/v1/silences"),
    ("DELETE", "/api/v1/silences/{silence_id}"),
    ("POST", "/api/v1/automation/pause"),
    ("POST", "/api/v1/automation/resume"),
    ("POST", "/api/v1/queue/dead-letter/redrive"),
    ("POST", "/api/v1/policies/{name}/reset"),
    ("POST", "/api/v1/policies/evaluate"),
    ("POST", "/api/v1/policies/backtest"),
    ("POST", "/api/v1/policies/{name}/backtest"),
    ("POST", "/api/v1/simulator/fleet/{service}/scale"),
    ("POST", "/api/v1/simulator/start"),
    ("POST", "/api/v1/simulator/stop"),
    ("POST", "/api/v1/ui/simulator/start"),
    ("POST", "/api/v1/ui/simulator/stop"),
    ("POST", "/api/v1/simulator/fleet/{service}/restart"),
}
OPEN_ROUTES = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")}
# Slack's button clicks carry Slack's signature instead of a key (the route checks it).
SIGNED_ROUTES = {("POST", "/api/v1/integrations/slack/interactions")}
PARAMS = {
    "name": "nope",
    "action_id": "999",
    "silence_id": "999",
    "severity": "info",
    "service": "web",
}


def expected_roles(method: str, path: str) -> set[str]:
    if (method, path) in OPEN_ROUTES:
        return {"anonymous", "viewer", "agent", "operator", "admin"}
    if path.startswith("/api/v1/keys"):
        return {"admin"}
    if method == "GET":
        return {"viewer", "operator", "admin"}
    if path.startswith("/api/v1/ingest") or path in INGEST_PATHS:
        return {"agent", "admin"}
    if (method, path) in OPERATOR_ROUTES:
        return {"operator", "admin"}
    return {"admin"}


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """Every operation of the app, from its OpenAPI document (every route is in it)."""
    return sorted(
        (method.upper(), path)
        for path, methods in app.openapi()["paths"].items()
        for method in methods
    )


async def make_keys(container: Container) -> dict[str, str]:
    keys = {}
    async with container.database.write() as conn:
        for role in Role:
            _, keys[role.value] = await create_key(
                conn, name=f"{role.value}-key", role=role, now=container.clock.now(), actor=Actor()
            )
    container.keys.forget()
    return keys


async def test_every_route_answers_the_role_matrix(
    app: FastAPI, client: httpx.AsyncClient, container: Container
) -> None:
    keys = await make_keys(container)
    checked = 0
    for method, path in operations(app):
        url = re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), path)
        allowed = expected_roles(method, path)
        for who in ("anonymous", "viewer", "agent", "operator", "admin"):
            headers = {} if who == "anonymous" else {"Authorization": f"Bearer {keys[who]}"}
            body: dict[str, Any] | None = None if method in ("GET", "DELETE") else {}
            response = await client.request(method, url, headers=headers, json=body)
            where = f"{who} {method} {path}: {response.status_code} {response.text[:120]}"
            if (method, path) in SIGNED_ROUTES:  # no key makes a difference: only a signature
                assert response.status_code == 401, where
                assert "signing_secret" in response.json()["detail"], where
            elif who in allowed:
                assert response.status_code not in (401, 403), where
            elif who == "anonymous":
                assert response.status_code == 401, where
                assert response.headers["www-authenticate"] == "Bearer"
            else:
                assert response.status_code == 403, where
                assert f"has role {who}" in response.json()["detail"]
            checked += 1
    assert checked > 200


async def test_keys_travel_in_either_header_and_bad_ones_are_refused(
    client: httpx.AsyncClient, container: Container
) -> None:
    keys = await make_keys(container)
    viewer = keys["viewer"]
    assert (await client.get("/api/v1/actions", headers={"X-API-Key": viewer})).status_code == 200
    bad = await client.get("/api/v1/actions", headers={"Authorization": "Bearer vk_nope"})
    assert bad.status_code == 401
    assert "not valid" in bad.json()["detail"]
    assert (await client.get("/api/v1/actions")).status_code == 401
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_the_api_documents_need_a_reader_and_refusals_count_under_their_route(
    client: httpx.AsyncClient, container: Container
) -> None:
    keys = await make_keys(container)
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert (await client.get(path)).status_code == 401, path
        assert (await client.get(path, headers={"X-API-Key": keys["viewer"]})).status_code == 200
    text = (await client.get("/metrics")).text
    assert 'route="/api/v1/actions",status="401"' not in text
    assert (await client.get("/api/v1/actions")).status_code == 401
    text = (await client.get("/metrics")).text
    assert 'route="/api/v1/actions",status="401"} 1.0' in text


async def test_the_key_name_is_the_actor_and_revoked_keys_stop_working(
    client: httpx.AsyncClient, container: Container
) -> None:
    keys = await make_keys(container)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    created = await client.post(
        "/api/v1/keys", json={"name": "ci-bot", "role": "operator"}, headers=admin
    )
    assert created.status_code == 201, created.text
    bot = created.json()["key"]
    assert created.json()["role"] == "operator"
    listed = (await client.get("/api/v1/keys", headers=admin)).json()["keys"]
    assert "ci-bot" in [k["name"] for k in listed]
    assert all("key" not in k for k in listed)
    assert bot not in str(await audit_rows(container))

    paused = await client.post(
        "/api/v1/automation/pause", json={"reason": "deploy"}, headers={"X-API-Key": bot}
    )
    assert paused.status_code == 200
    assert paused.json()["by"] == "ci-bot"
    [row] = [r for r in await audit_rows(container) if r["kind"] == "automation.paused"]
    assert row["actor"] == "ci-bot"

    again = await client.post(
        "/api/v1/keys", json={"name": "ci-bot", "role": "viewer"}, headers=admin
    )
    assert again.status_code == 409
    assert (await client.delete("/api/v1/keys/ci-bot", headers=admin)).status_code == 200
    refused = await client.get("/api/v1/actions", headers={"X-API-Key": bot})
    assert refused.status_code == 401
    assert (await client.delete("/api/v1/keys/ghost", headers=admin)).status_code == 404


async def test_auto_mode_is_open_until_the_first_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/actions")).status_code == 200
    created = await client.post("/api/v1/keys", json={"name": "first", "role": "admin"})
    assert created.status_code == 201
    assert (await client.get("/api/v1/actions")).status_code == 401
    key = created.json()["key"]
    assert (await client.get("/api/v1/actions", headers={"X-API-Key": key})).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"auth": "required"}])
async def test_required_mode_refuses_without_any_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/actions")).status_code == 401
    assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"auth": "off"}])
async def test_off_mode_checks_nothing(client: httpx.AsyncClient, container: Container) -> None:
    await make_keys(container)
    assert (await client.get("/api/v1/actions")).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"metrics_auth": True}])
async def test_metrics_can_require_a_key(client: httpx.AsyncClient, container: Container) -> None:
    keys = await make_keys(container)
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"X-API-Key": keys["agent"]})).status_code == 403
    assert (await client.get("/metrics", headers={"X-API-Key": keys["viewer"]})).status_code == 200


async def test_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name", "role": "viewer"}, "name"),
        ({"name": "ok", "role": "root"}, "role"),
        ({"role": "viewer"}, "name"),
    ],
)
async def test_a_bad_key_request_is_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/v1/keys", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field
