"""The queue API (docs/api.md "Queue") with an in-process worker, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests.api.test_alerts import alert, notification
from tests.conftest import CLIENT_HEADERS
from tests.helpers import wait_for_async
from vigil.api.app import create_app
from vigil.clock import FakeClock
from vigil.container import build_container
from vigil.settings import Settings

REMEDIATIONS = """
remediations:
  - action: restart-service
    targets: "broken-*"
    plugin: command
    with: {argv: ["false"]}
    retries: {max_attempts: 1}
  - action: restart-service
    targets: "tagged-*"
    plugin: command
    with: {argv: [echo, "{tags.service}", "--name={tags.service.name}"]}
  - action: restart-service
    targets: "alerted-*"
    plugin: command
    with: {argv: [echo, "{tags.alertname}", "{tags.severity}"]}
  - action: restart-service
    plugin: log
"""


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "remediations.yaml"
    path.write_text(REMEDIATIONS)
    return {"remediations_file": path}


@pytest.fixture
async def working(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that runs its in-process worker."""
    container = build_container(settings, clock=clock)
    application = create_app(settings, container, run_runner=False, run_worker=True)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://vigil.test", headers=CLIENT_HEADERS
        ) as c:
            yield c


async def settled(
    client: httpx.AsyncClient, action_id: int, status: str, *, attempts: int = 1
) -> dict[str, Any]:
    """The action once its attempt ``attempts`` reached ``status`` (polled: the worker runs
    beside the test)."""

    async def reached() -> dict[str, Any] | None:
        action: dict[str, Any] = (await client.get(f"/api/v1/actions/{action_id}")).json()
        return action if action["status"] == status and action["attempts"] >= attempts else None

    return await wait_for_async(
        reached, what=f"action {action_id} {status} after attempt {attempts}"
    )


async def manual(client: httpx.AsyncClient, target: str) -> int:
    response = await client.post(
        "/api/v1/actions", json={"target": target, "action": "restart-service"}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["action_id"])


async def test_stats_have_the_documented_shape_on_both_paths(client: httpx.AsyncClient) -> None:
    await manual(client, "web-01")  # no worker in this app: the task waits in the queue
    for path in ("/api/v1/queue/stats", "/api/v1/ui/queue/stats"):
        stats = (await client.get(path)).json()
        assert stats["backend"] == "memory"
        assert (stats["queue_length"], stats["tasks_enqueued"]) == (1, 1)
        assert (stats["tasks_completed"], stats["dead_letter_length"]) == (0, 0)
        assert stats["last_processed_task"] is None


async def test_a_failed_action_is_dead_lettered_listed_and_redriven(
    working: httpx.AsyncClient,
) -> None:
    ok = await manual(working, "web-01")
    broken = await manual(working, "broken-01")
    assert (await settled(working, ok, "completed"))["result"]["status"] == "success"
    failed = await settled(working, broken, "failed")
    assert failed["attempts"] == 1
    assert "exit" in failed["error_message"].lower()

    dead = (await working.get("/api/v1/queue/dead-letter")).json()
    assert dead["count"] == 1
    (task,) = dead["tasks"]
    assert (task["action_id"], task["attempts"]) == (broken, 1)
    assert task["error"] == failed["error_message"]
    stats = (await working.get("/api/v1/queue/stats")).json()
    assert (stats["tasks_completed"], stats["tasks_failed"]) == (1, 1)
    assert stats["dead_letter_length"] == 1
    assert stats["last_processed_task"]["action_id"] in (ok, broken)

    response = await working.post(
        "/api/v1/queue/dead-letter/redrive", json={"task_ids": [task["task_id"], "task_nope"]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["redriven"] == 1
    assert [a["id"] for a in body["actions"]] == [broken]
    assert body["skipped"] == [
        {"task_id": "task_nope", "action_id": None, "reason": "not in the dead letter"}
    ]
    # It runs again as attempt 2 (the count carries on), and fails again.
    again = await settled(working, broken, "failed", attempts=2)
    assert again["attempts"] == 2
    history = (await working.get(f"/api/v1/actions/{broken}/history")).json()
    assert [(h["from"], h["to"], h["attempt"]) for h in history] == [
        (None, "pending", 0),
        ("pending", "running", 1),
        ("running", "failed", 1),
        ("failed", "pending", 1),
        ("pending", "running", 2),
        ("running", "failed", 2),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"all": False},
        {"all": True, "task_ids": ["task_1"]},
        {"task_ids": ["task_1"], "action_ids": [1]},
        {"task_ids": []},
        {"action_ids": []},
        {"action_ids": [0]},
        {"action_ids": ["1"]},
        {"all": "yes"},
    ],
)
async def test_redrive_needs_exactly_one_of_task_ids_and_all(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/api/v1/queue/dead-letter/redrive", json=body)
    assert response.status_code == 422, response.text


async def test_an_action_no_remediation_handles_is_refused_and_nothing_is_recorded(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/actions", json={"target": "web-01", "action": "reboot-the-world"}
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "action"]
    assert "no remediation handles action 'reboot-the-world'" in error["msg"]
    assert (await client.get("/api/v1/actions")).json()["total"] == 0

    policy = {
        "name": "reboot",
        "severity": "warning",
        "target": "all",
        "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
        "action": "reboot-the-world",
    }
    response = await client.post("/api/v1/policies", json=policy)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "action"]
    assert (await client.get("/api/v1/policies/reboot")).status_code == 404


async def test_in_process_remediations_show_in_the_api_metrics(
    working: httpx.AsyncClient,
) -> None:
    action_id = await manual(working, "web-07")
    await settled(working, action_id, "completed")
    text = (await working.get("/metrics")).text
    assert 'vigil_remediations_total{action="restart-service",status="success"} 1.0' in text


async def test_a_worker_renders_the_tags_of_the_sample_that_fired_the_action(
    working: httpx.AsyncClient,
) -> None:
    policy = {
        "name": "tagged-cpu-high",
        "target": "tagged-*",
        "auto_remediate": True,
        "condition": {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 90},
        "action": "restart-service",
    }
    assert (await working.post("/api/v1/policies", json=policy)).status_code == 201

    async def fire(target: str, tags: dict[str, str]) -> int:
        sample = {"name": "cpu_percent", "value": 99, "target": target, "tags": tags}
        response = await working.post("/api/v1/ingest", json=sample)
        assert response.status_code == 201, response.text
        [action] = response.json()["actions"]
        return int(action["action_id"])

    ran = await fire("tagged-01", {"service": "nginx", "service.name": "checkout"})
    action = await settled(working, ran, "completed")
    assert action["result"]["details"]["stdout"] == "nginx --name=checkout\n"

    # A tag the sample did not carry fails the attempt for good, naming it.
    missing = await fire("tagged-02", {"service": "nginx"})
    action = await settled(working, missing, "failed")
    assert action["attempts"] == 1
    assert "no tag 'service.name'" in action["error_message"]


async def test_a_worker_renders_the_labels_of_the_alert_that_fired_the_action(
    working: httpx.AsyncClient, clock: FakeClock
) -> None:
    policy = {
        "name": "alerted-cpu-high",
        "target": "alerted-*",
        "auto_remediate": True,
        "condition": {"type": "alert", "alertname": "HighCPU"},
        "action": "restart-service",
    }
    assert (await working.post("/api/v1/policies", json=policy)).status_code == 201
    firing = alert(clock, instance="alerted-01:9100", severity="critical")
    response = await working.post("/api/v1/alerts/alertmanager", json=notification(firing))
    assert response.status_code == 200, response.text
    [decision] = response.json()["alerts"][0]["decisions"]
    action = await settled(working, decision["action_id"], "completed")
    assert action["result"]["details"]["stdout"] == "HighCPU critical\n"
