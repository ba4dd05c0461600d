"""Cross-site requests: while no API key is needed, a web page the operator visits must not
be able to change anything (no CORS simple request reaches a state-changing route), nor read
anything by pointing its own name at Vigil's address (DNS rebinding)."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.support import started_client, table_counts
from vigil.container import Container
from vigil.settings import Settings

STATE_CHANGING = ("post", "put", "patch", "delete")
PATH_VALUES = {"name": "p", "action_id": "1", "silence_id": "1", "service": "web"}
SLACK_INTERACTIONS = "/api/v1/integrations/slack/interactions"
METRIC = b'{"name": "cpu_usage", "value": 99, "target": "web-x"}'


@pytest.fixture
async def bare(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends only what a browser's simple request would (no custom header)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vigil.test") as c:
        yield c


def state_changing_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every state-changing route."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if method in STATE_CHANGING:
                filled = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
                routes.append((method.upper(), filled))
    return routes


SIMPLE_REQUESTS: dict[str, dict[str, Any]] = {
    "text/plain": {"content": METRIC, "headers": {"Content-Type": "text/plain"}},
    "form": {"data": {"name": "cpu_usage", "value": "99", "target": "web-x"}},
    "multipart": {"files": {"f": ("m.json", METRIC, "application/json")}},
    "no body, no header": {},
    "empty text/plain": {"content": b"", "headers": {"Content-Type": "text/plain"}},
}


async def test_no_simple_request_reaches_a_state_changing_route(
    app: FastAPI, bare: httpx.AsyncClient, container: Container
) -> None:
    routes = state_changing_routes(app)
    # The routes the attack would aim at are among those walked.
    assert ("POST", "/api/v1/ingest") in routes
    assert ("POST", "/api/v1/actions/1/approve") in routes
    assert ("POST", "/api/v1/policies/reload") in routes
    assert ("POST", "/api/v1/simulator/start") in routes
    before = await table_counts(container)
    for method, path in routes:
        for kind, request in SIMPLE_REQUESTS.items():
            r = await bare.request(method, path, **request)
            expected = 403 if kind == "no body, no header" else 415
            if path == SLACK_INTERACTIONS and kind == "form":
                expected = 401  # a form, as Slack sends it: acted on only when Slack signed it
            assert r.status_code == expected, (method, path, kind, r.text)
    assert await table_counts(container) == before
    assert not container.simulator.running


async def test_json_or_a_custom_header_is_accepted(
    bare: httpx.AsyncClient, container: Container
) -> None:
    r = await bare.post("/api/v1/ingest", content=METRIC, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert r.json() == {
        "detail": "the body must be JSON (Content-Type: application/json), not 'text/plain'"
    }
    r = await bare.post("/api/v1/ingest", content=METRIC)
    assert r.status_code == 415, "a body without a Content-Type is not taken for JSON"
    for content_type in ("application/json", "application/json; charset=utf-8"):
        r = await bare.post(
            "/api/v1/ingest", content=METRIC, headers={"Content-Type": content_type}
        )
        assert r.status_code == 201, r.text
    # No body: a custom header (which a page cannot send without a preflight) is enough.
    r = await bare.post("/api/v1/automation/pause", json={"reason": "maintenance"})
    assert r.status_code == 200
    r = await bare.post("/api/v1/automation/resume")
    assert r.status_code == 403
    assert "X-Vigil-Request: 1" in r.json()["detail"]
    assert (await container.actions.automation_state()).paused
    for header in ({"X-Vigil-Request": "1"}, {"X-API-Key": "x"}, {"Authorization": "Bearer x"}):
        r = await bare.post("/api/v1/automation/pause", json={"reason": "again"})
        r = await bare.post("/api/v1/automation/resume", headers=header)
        assert r.status_code == 200, (header, r.text)
    # Reading needs neither.
    assert (await bare.get("/api/v1/automation")).status_code == 200


async def test_a_foreign_host_is_refused(bare: httpx.AsyncClient, container: Container) -> None:
    before = await table_counts(container)
    for method, path, body in (
        ("GET", "/api/v1/policies", None),
        ("GET", "/metrics", None),
        ("POST", "/api/v1/ingest", {"name": "cpu_usage", "value": 99, "target": "web-x"}),
    ):
        r = await bare.request(
            method,
            path,
            json=body,
            headers={"Host": "attacker.example:8000", "X-Vigil-Request": "1"},
        )
        assert r.status_code == 400, (path, r.text)
        assert "'attacker.example' is not one this Vigil serves" in r.json()["detail"]
    assert await table_counts(container) == before
    # Probes call /health and /ready by address: they answer whatever the host.
    r = await bare.get("/health", headers={"Host": "10.1.2.3:8000"})
    assert r.status_code == 200
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST", "vigil.test"):
        r = await bare.get("/api/v1/policies", headers={"Host": host})
        assert r.status_code == 200, host


@pytest.mark.parametrize(
    ("listen", "allowed", "host", "served"),
    [
        ("127.0.0.1", "", "127.0.0.1:8000", True),
        ("127.0.0.1", "", "vigil.internal", False),
        ("10.0.0.5", "", "10.0.0.5:8000", True),
        ("::1", "", "[::1]:8000", True),
        ("0.0.0.0", "", "10.0.0.5:8000", False),
        ("0.0.0.0", "vigil.internal", "Vigil.Internal:8000", True),
        ("0.0.0.0", "*.example.com", "vigil.example.com", True),
        ("0.0.0.0", "*.example.com", "example.com.evil.net", False),
        ("0.0.0.0", "*", "anything.at.all", True),
    ],
)
async def test_the_hosts_served(
    monkeypatch: pytest.MonkeyPatch,
    sqlite_template: Path,
    tmp_path: Path,
    listen: str,
    allowed: str,
    host: str,
    served: bool,
) -> None:
    monkeypatch.setenv("VIGIL_ALLOWED_HOSTS", allowed)
    shutil.copy(sqlite_template, tmp_path / "vigil.db")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'vigil.db'}", host=listen)
    async with started_client(settings) as (client, _):
        r = await client.get("/api/v1/automation", headers={"Host": host})
    assert (r.status_code == 200) is served, r.text


def test_allowed_hosts_are_names_without_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_ALLOWED_HOSTS", " Vigil.Example.com , *.internal ,[::1]")
    assert Settings(_env_file=None).allowed_hosts == [
        "vigil.example.com",
        "*.internal",
        "[::1]",
    ]
    for bad in ("vigil.example.com:8000", "http://vigil.example.com", "a.*.com"):
        monkeypatch.setenv("VIGIL_ALLOWED_HOSTS", bad)
        with pytest.raises(ValueError, match="without a scheme or port"):
            Settings(_env_file=None)


def test_the_external_url_names_a_served_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_ALLOWED_HOSTS", raising=False)
    settings = Settings(_env_file=None, external_url="https://Vigil.Example.com:8443/base")
    assert "vigil.example.com" in settings.served_hosts
    assert "vigil.example.com" not in Settings(_env_file=None).served_hosts
