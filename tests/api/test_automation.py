"""The global automation switch (docs/api.md "Safety controls"), on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.support import audit_rows
from vigil.container import Container

POLICY = {
    "name": "web-cpu-high",
    "severity": "warning",
    "target": "web-*",
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 90},
    "action": "scale-up",
}


async def hot(client: httpx.AsyncClient, target: str = "web-01") -> dict[str, Any]:
    response = await client.post(
        "/api/v1/ingest", json={"name": "cpu_percent", "value": 97, "target": target}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_pause_suppresses_every_new_action_until_resumed(
    client: httpx.AsyncClient, container: Container
) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    assert (await client.get("/api/v1/automation")).json() == {
        "paused": False,
        "reason": None,
        "since": None,
        "by": None,
    }

    response = await client.post("/api/v1/automation/pause", json={"reason": "  db migration "})
    assert response.status_code == 200, response.text
    state = response.json()
    assert (state["paused"], state["reason"], state["by"]) == (True, "db migration", "anonymous")
    assert state["since"] is not None
    assert (await client.get("/api/v1/automation")).json() == state

    body = await hot(client)
    assert body["actions"] == []
    assert [v["suppressed"] for v in body["violations"]] == ["paused"]
    manual = await client.post(
        "/api/v1/actions", json={"target": "web-09", "action": "restart-service"}
    )
    assert manual.status_code == 409
    assert "automation is paused" in manual.json()["detail"]
    dry = await client.post(
        "/api/v1/policies/evaluate", json={"metrics": {"cpu_percent": 95}, "target": "web-02"}
    )
    assert [a["status"] for a in dry.json()["actions_triggered"]] == ["suppressed: paused"]
    assert (await client.get("/api/v1/actions")).json()["total"] == 0

    resumed = await client.post("/api/v1/automation/resume", json={"reason": "done"})
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    # The violation still there acts at its next evaluation.
    body = await hot(client)
    assert [a["action"] for a in body["actions"]] == ["scale-up"]

    kinds = [row["kind"] for row in await audit_rows(container)]
    assert kinds.count("automation.paused") == 1
    assert kinds.count("automation.resumed") == 1


async def test_pausing_again_keeps_the_time_it_began(client: httpx.AsyncClient) -> None:
    first = (await client.post("/api/v1/automation/pause", json={"reason": "one"})).json()
    second = (await client.post("/api/v1/automation/pause", json={"reason": "two"})).json()
    assert second["since"] == first["since"]
    assert second["reason"] == "two"


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}, {"reason": 5}])
async def test_a_pause_needs_a_reason_and_bad_input_changes_nothing(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/api/v1/automation/pause", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "reason"]
    assert (await client.get("/api/v1/automation")).json()["paused"] is False


async def test_resume_takes_no_body(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/automation/pause", json={"reason": "x"})
    response = await client.post("/api/v1/automation/resume")
    assert response.status_code == 200
    assert response.json()["paused"] is False


async def test_a_shadow_policy_records_what_it_would_do_and_never_acts(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/api/v1/policies", json={**POLICY, "shadow": True})
    assert created.status_code == 201
    assert created.json()["shadow"] is True
    body = await hot(client)
    assert body["actions"] == []
    assert [v["suppressed"] for v in body["violations"]] == ["shadow"]
    dry = await client.post(
        "/api/v1/policies/evaluate", json={"metrics": {"cpu_percent": 95}, "target": "web-02"}
    )
    assert [a["status"] for a in dry.json()["actions_triggered"]] == ["suppressed: shadow"]
    # Out of shadow mode, it acts.
    updated = await client.put(f"/api/v1/policies/{POLICY['name']}", json={"shadow": False})
    assert updated.json()["shadow"] is False
    assert [a["action"] for a in (await hot(client))["actions"]] == ["scale-up"]


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_shadow_is_a_strict_boolean(client: httpx.AsyncClient, value: Any) -> None:
    response = await client.post("/api/v1/policies", json={**POLICY, "shadow": value})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "shadow"]
