"""The first path end to end: a metric arrives, a policy fires, an action is recorded."""

from __future__ import annotations

import httpx

POLICY = {
    "name": "web-cpu",
    "severity": "warning",
    "target": "web-*",
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu_percent", "threshold": 90},
    "action": "scale-up",
    "params": {"replicas": 2},
}


async def test_violation_records_pending_action_with_history(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/policies", json=POLICY)).status_code == 201
    r = await client.post(
        "/api/v1/ingest", json={"name": "cpu_percent", "value": 95, "tags": {"host": "web-01"}}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["violations"] == [
        {"policy_name": "web-cpu", "severity": "warning", "action": "scale-up", "target": "web-01"}
    ]
    [action] = body["actions"]
    assert action["status"] == "pending"
    history = (await client.get(f"/api/v1/actions/{action['action_id']}/history")).json()
    assert [(h["from"], h["to"]) for h in history] == [(None, "pending")]
