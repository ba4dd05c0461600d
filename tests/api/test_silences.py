"""Silences (docs/api.md "Safety controls"), on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.support import audit_rows
from vigil.clock import FakeClock
from vigil.container import Container

POLICY = {
    "name": "web-cpu-high",
    "severity": "warning",
    "target": "web-*",
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 90},
    "action": "scale-up",
    "cooldown_seconds": 0,
}
UNTIL = "2026-01-19T13:00:00Z"  # the fake clock starts at 12:00


async def hot(client: httpx.AsyncClient, target: str, **tags: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/ingest",
        json={"name": "cpu_percent", "value": 97, "target": target, "tags": tags},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def silence(client: httpx.AsyncClient, **matchers: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/silences",
        json={"matchers": matchers, "ends_at": UNTIL, "comment": "load test"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_silence_suppresses_matching_violations_until_it_ends(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    created = await silence(client, target="web-0[1-2]", tags={"region": "eu"})
    assert created["active"] is True
    assert created["created_by"] == "anonymous"
    assert created["matchers"] == {"target": "web-0[1-2]", "tags": {"region": "eu"}}

    silenced = await hot(client, "web-01", region="eu")
    assert [v["suppressed"] for v in silenced["violations"]] == ["silenced"]
    assert silenced["actions"] == []
    other_region = await hot(client, "web-02", region="us")
    assert [a["target"] for a in other_region["actions"]] == ["web-02"]
    other_target = await hot(client, "web-03", region="eu")
    assert [a["target"] for a in other_target["actions"]] == ["web-03"]

    listed = (await client.get("/api/v1/silences", params={"active": "true"})).json()
    assert [s["id"] for s in listed["silences"]] == [created["id"]]

    # Expiring it: the violation still there acts at its next evaluation.
    assert (await client.delete(f"/api/v1/silences/{created['id']}")).json() == {"ok": True}
    assert (await client.get("/api/v1/silences", params={"active": "true"})).json() == {
        "silences": []
    }
    again = await hot(client, "web-01", region="eu")
    assert [a["target"] for a in again["actions"]] == ["web-01"]

    kinds = [row["kind"] for row in await audit_rows(container)]
    assert kinds.count("silence.created") == 1
    assert kinds.count("silence.expired") == 1


async def test_a_silence_ends_by_itself(client: httpx.AsyncClient, clock: FakeClock) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    await silence(client, policy="web-cpu-*")
    assert (await hot(client, "web-01"))["actions"] == []
    clock.advance(3600)
    listed = (await client.get("/api/v1/silences")).json()["silences"]
    assert [s["active"] for s in listed] == [False]
    assert [a["target"] for a in (await hot(client, "web-01"))["actions"]] == ["web-01"]


async def test_the_dry_run_reports_a_silence(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    await silence(client, policy="web-cpu-high")
    dry = await client.post(
        "/api/v1/policies/evaluate", json={"metrics": {"cpu_percent": 95}, "target": "web-02"}
    )
    assert [a["status"] for a in dry.json()["actions_triggered"]] == ["suppressed: silenced"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"matchers": {}, "ends_at": UNTIL, "comment": "x"}, "matchers"),
        ({"matchers": {"target": "web-*"}, "comment": "x"}, "ends_at"),
        ({"matchers": {"target": "web-*"}, "ends_at": UNTIL, "comment": " "}, "comment"),
        (
            {"matchers": {"target": "web-*"}, "ends_at": "2026-01-19T11:00:00Z", "comment": "x"},
            "ends_at",
        ),
        (
            {
                "matchers": {"target": "web-*"},
                "starts_at": "2026-01-19T14:00:00Z",
                "ends_at": UNTIL,
                "comment": "x",
            },
            "ends_at",
        ),
        ({"matchers": {"tags": {"a": 1}}, "ends_at": UNTIL, "comment": "x"}, "matchers"),
        ({"matchers": {"target": "web-*"}, "ends_at": "soon", "comment": "x"}, "ends_at"),
    ],
)
async def test_bad_silences_are_refused_naming_the_field_and_nothing_is_stored(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/v1/silences", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]
    assert (await client.get("/api/v1/silences")).json() == {"silences": []}


async def test_expiring_an_unknown_silence_is_a_404(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/api/v1/silences/999")).status_code == 404
