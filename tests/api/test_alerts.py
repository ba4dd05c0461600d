"""Alertmanager's webhook and ``alert`` policies, through the API on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.api.support import table_counts
from tests.api.test_access import make_keys
from tests.api.test_episodes import complete
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.db.tables import alerts
from vigil.policy.runner import PolicyRunner

URL = "/api/v1/alerts/alertmanager"
POLICY: dict[str, Any] = {
    "name": "high-cpu",
    "target": "web-*",
    "auto_remediate": True,
    "condition": {"type": "alert", "alertname": "HighCPU", "matchers": {"severity": "critical"}},
    "action": "restart-service",
    "cooldown_seconds": 0,
    "verify": {"within_seconds": 60},
}


def stamp(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def alert(
    clock: FakeClock,
    *,
    status: str = "firing",
    instance: str = "web-1:9100",
    fingerprint: str = "a1b2c3d4e5f60718",
    started_ago: float = 30,
    **labels: str,
) -> dict[str, Any]:
    starts = clock.now() - timedelta(seconds=started_ago)
    return {
        "status": status,
        "labels": {
            "alertname": "HighCPU",
            "severity": "critical",
            "instance": instance,
            "job": "node",
            **labels,
        },
        "annotations": {"summary": "CPU above 90%", "description": "line one\nline two"},
        "startsAt": stamp(starts),
        # Firing: a time it would end unless refreshed, as Prometheus sets it.
        "endsAt": stamp(clock.now() + timedelta(seconds=0 if status == "resolved" else 240)),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=cpu",
        "fingerprint": fingerprint,
    }


def notification(*items: dict[str, Any]) -> dict[str, Any]:
    """A body exactly as Alertmanager 0.25 sends it."""
    status = "firing" if any(a["status"] == "firing" for a in items) else "resolved"
    return {
        "receiver": "vigil",
        "status": status,
        "alerts": list(items),
        "groupLabels": {"alertname": "HighCPU"},
        "commonLabels": {"alertname": "HighCPU"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="HighCPU"}',
        "truncatedAlerts": 0,
    }


async def post(client: httpx.AsyncClient, body: Any, status: int = 200, **kw: Any) -> Any:
    if body is not None:
        kw["json"] = body
    response = await client.post(URL, **kw)
    assert response.status_code == status, response.text
    return response.json()


async def create(client: httpx.AsyncClient, **fields: Any) -> None:
    response = await client.post("/api/v1/policies", json={**POLICY, **fields})
    assert response.status_code == 201, response.text


async def pair(client: httpx.AsyncClient, target: str = "web-1") -> Any:
    body = (await client.get("/api/v1/policies/high-cpu/state")).json()
    return next((t for t in body["targets"] if t["target"] == target), None)


async def test_a_firing_alert_acts_once_however_often_it_is_sent(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    await create(client)
    body = notification(alert(clock))
    first = await post(client, body)
    [result] = first["alerts"]
    assert result["fingerprint"] == "a1b2c3d4e5f60718"
    assert result["target"] == "web-1"
    assert result["status"] == "firing"
    [decision] = result["decisions"]
    assert decision["policy_name"] == "high-cpu"
    assert decision["target"] == "web-1"
    assert decision["action"] == "restart-service"
    # The labels but the target's are the action's tags, for {tags.NAME} placeholders.
    action = (await client.get(f"/api/v1/actions/{decision['action_id']}")).json()
    assert action["tags"] == {"alertname": "HighCPU", "severity": "critical", "job": "node"}
    for _ in range(4):  # repeat_interval, retries
        clock.advance(10)
        again = await post(client, body)
        assert again["alerts"][0]["decisions"] == []
        assert again["alerts"][0]["new"] is False
    assert (await client.get("/api/v1/actions")).json()["total"] == 1
    assert (await client.get("/api/v1/decisions")).json()["total"] == 1
    [stored] = (await client.get("/api/v1/alerts", params={"status": "firing"})).json()["alerts"]
    assert stored["labels"]["job"] == "node"
    assert stored["annotations"]["description"] == "line one\nline two"
    assert stored["target"] == "web-1"
    assert stored["ends_at"] is None
    assert stored["last_seen_at"] > stored["received_at"]
    state = await pair(client)
    assert state["state"] == "firing"
    # The other labels are the episode's tags (silences and placeholders read them).
    decisions = (await client.get("/api/v1/decisions")).json()["decisions"]
    assert decisions[0]["value"] is None


async def test_resolution_settles_verifies_and_a_new_start_is_a_new_episode(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    await create(client)
    first = await post(client, notification(alert(clock)))
    action_id = first["alerts"][0]["decisions"][0]["action_id"]
    await complete(container, action_id)
    clock.advance(20)
    resolved = alert(clock, status="resolved", started_ago=50)
    answer = await post(client, notification(resolved))
    assert answer["alerts"][0]["resolved"] == ["high-cpu"]
    assert (await pair(client))["state"] == "resolved"
    await container.runner.run_once()
    detail = (await client.get(f"/api/v1/actions/{action_id}")).json()
    assert detail["verification"]["result"] == "verified"
    # A late firing notification of the episode that ended changes nothing.
    late = await post(client, notification(alert(clock, started_ago=50)))
    assert late["alerts"][0]["decisions"] == []
    assert "ended" in late["alerts"][0]["note"]
    assert (await pair(client))["state"] == "resolved"
    # The rule fires again: a new startsAt, a new episode.
    clock.advance(5)
    again = await post(client, notification(alert(clock, started_ago=1)))
    assert again["alerts"][0]["new"] is True
    assert "action_id" in again["alerts"][0]["decisions"][0]
    assert (await client.get("/api/v1/actions")).json()["total"] == 2
    listed = (await client.get("/api/v1/alerts")).json()
    assert listed["total"] == 2
    assert [a["status"] for a in listed["alerts"]] == ["firing", "resolved"]
    assert listed["alerts"][0]["ends_at"] is None
    assert listed["alerts"][1]["ends_at"] is not None


async def test_a_pair_held_by_two_alerts_resolves_with_the_last(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client)
    one = alert(clock, fingerprint="1111", cpu="0")
    two = alert(clock, fingerprint="2222", cpu="1")
    answer = await post(client, notification(one, two))
    assert [len(a["decisions"]) for a in answer["alerts"]] == [1, 0]
    await post(client, notification({**one, "status": "resolved"}, two))
    assert (await pair(client))["state"] == "firing"
    await post(client, notification({**two, "status": "resolved"}))
    assert (await pair(client))["state"] == "resolved"


async def test_an_alert_without_a_target_is_stored_and_evaluates_nothing(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client, target="all")
    item = alert(clock)
    del item["labels"]["instance"], item["labels"]["job"]
    [result] = (await post(client, notification(item)))["alerts"]
    assert result["target"] is None
    assert result["decisions"] == []
    assert "no usable target label" in result["note"]
    assert (await client.get("/api/v1/alerts")).json()["total"] == 1
    assert (await client.get("/api/v1/decisions")).json()["total"] == 0


async def test_the_target_label_and_matchers_of_the_policy(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client, target="node", target_label="job")
    warning = alert(clock, fingerprint="w1", severity="warning")
    [skipped] = (await post(client, notification(warning)))["alerts"]
    assert skipped["decisions"] == []
    [result] = (await post(client, notification(alert(clock))))["alerts"]
    assert result["target"] == "web-1"  # as for a policy without target_label
    assert result["decisions"][0]["target"] == "node"


BAD_BODIES: list[tuple[str, Any, list[Any]]] = [
    ("no alerts", {"version": "4", "status": "firing"}, ["body", "alerts"]),
    ("alerts not a list", {"alerts": {"a": 1}}, ["body", "alerts"]),
    ("not an object", [1, 2], ["body"]),
    ("bad status", {"status": "broken"}, ["body", "alerts", 0, "status"]),
    (
        "label not a string",
        {"labels": {"alertname": 5}},
        ["body", "alerts", 0, "labels", "alertname"],
    ),
    ("bad timestamp", {"startsAt": "yesterday"}, ["body", "alerts", 0, "startsAt"]),
    ("number timestamp", {"startsAt": 1700000000}, ["body", "alerts", 0, "startsAt"]),
    ("naive timestamp", {"startsAt": "2026-12-07T10:00:00"}, ["body", "alerts", 0, "startsAt"]),
    ("no fingerprint", {"fingerprint": None}, ["body", "alerts", 0, "fingerprint"]),
    (
        "NUL in a label",
        {"labels": {"alertname": "a\u0000"}},
        ["body", "alerts", 0, "labels", "alertname"],
    ),
    ("truncatedAlerts", {"truncatedAlerts": "3"}, ["body", "truncatedAlerts"]),
    ("not JSON", b"{", ["body"]),
]


@pytest.mark.parametrize(("case", "change", "loc"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_a_malformed_body_is_422_naming_the_field_and_writes_nothing(
    client: httpx.AsyncClient,
    clock: FakeClock,
    container: Container,
    case: str,
    change: Any,
    loc: list[Any],
) -> None:
    await create(client)
    before = await table_counts(container)
    body: Any = notification(alert(clock))
    if case in ("no alerts", "alerts not a list", "truncatedAlerts"):
        body = {k: v for k, v in body.items() if k != "alerts"} | change
        if case == "truncatedAlerts":
            body["alerts"] = []
    elif case == "not an object":
        body = change
    elif case == "not JSON":
        headers = {"Content-Type": "application/json"}
        errors = (await post(client, None, 422, content=change, headers=headers))["detail"]
        assert errors[0]["loc"] == loc
        return
    else:
        item = body["alerts"][0]
        for key, value in change.items():
            if value is None:
                del item[key]
            elif key == "labels":
                item["labels"] = value
            else:
                item[key] = value
    errors = (await post(client, body, 422))["detail"]
    assert loc in [e["loc"] for e in errors], errors
    assert (
        'vigil_ingest_rejected_total{reason="invalid"} 1.0' in (await client.get("/metrics")).text
    )
    assert await table_counts(container) == before
    async with container.database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(alerts))).scalar_one() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("startsAt", "0001-01-01T00:00:00+01:00"), ("endsAt", "9999-12-31T23:59:59-01:00")],
)
async def test_a_time_with_no_utc_form_is_a_422(
    client: httpx.AsyncClient, clock: FakeClock, container: Container, field: str, value: str
) -> None:
    before = await table_counts(container)
    item = {**alert(clock, status="resolved"), field: value}
    errors = (await post(client, notification(item), 422))["detail"]
    assert ["body", "alerts", 0, field] in [e["loc"] for e in errors], errors
    assert await table_counts(container) == before


async def test_a_label_that_cannot_be_a_target_or_tag_is_not_used_as_one(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client)
    forged = alert(clock, instance="web-1\nforged:9100", fingerprint="0000000000000001")
    blank = alert(clock, instance=" ", fingerprint="0000000000000002")
    answer = await post(client, notification(forged, blank))
    assert [a["target"] for a in answer["alerts"]] == [None, None]
    assert all(a["decisions"] == [] for a in answer["alerts"])
    tagged = alert(clock, note="line\nbreak", fingerprint="0000000000000003")
    [result] = (await post(client, notification(tagged)))["alerts"]
    action = (await client.get(f"/api/v1/actions/{result['decisions'][0]['action_id']}")).json()
    assert "note" not in action["tags"]
    assert action["tags"]["severity"] == "critical"


async def test_alerts_go_stale_only_once_the_runner_has_listened_that_long(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    """Vigil itself was away longer than the stale time: its first passes must not end every
    episode before Alertmanager's next repeat can be heard."""
    await create(client)
    body = notification(alert(clock))
    await post(client, body)
    stale_after = container.settings.alert_stale_seconds
    clock.advance(stale_after * 3)  # Vigil down meanwhile
    restarted = PolicyRunner(
        database=container.database,
        metrics=container.metrics,
        clock=clock,
        enabled=False,
        interval=10,
        retention=container.settings.metrics_retention_seconds * 10,
        prune_chunk=1000,
        alert_stale=stale_after,
    )
    await restarted.run_once()
    assert (await pair(client))["state"] == "firing"
    clock.advance(60)
    await post(client, body)  # the repeat is heard: nothing new
    await restarted.run_once()
    assert (await pair(client))["state"] == "firing"
    clock.advance(stale_after + 1)  # then Alertmanager falls silent for good
    await restarted.run_once()
    assert (await pair(client))["state"] == "resolved"


async def test_grafana_s_extra_fields_are_accepted(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    item = {
        **alert(clock),
        "endsAt": "0001-01-01T00:00:00Z",  # Go's zero time
        "silenceURL": "http://grafana/silence",
        "values": {"B": 95.5},
    }
    body = {
        **notification(item),
        "version": "1",
        "orgId": 1,
        "title": "[FIRING:1]",
        "state": "alerting",
    }
    assert (await post(client, body))["alerts"][0]["status"] == "firing"


async def test_only_agent_and_admin_keys_may_post_alerts(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    keys = await make_keys(container)
    body = notification(alert(clock))
    assert (await client.post(URL, json=body)).status_code == 401
    for role, status in (("viewer", 403), ("operator", 403), ("agent", 200)):
        headers = {"Authorization": f"Bearer {keys[role]}"}
        assert (await client.post(URL, json=body, headers=headers)).status_code == status, role
    headers = {"Authorization": f"Bearer {keys['viewer']}"}
    assert (await client.get("/api/v1/alerts", headers=headers)).json()["total"] == 1


async def test_an_alert_not_refreshed_goes_stale_and_its_episode_settles(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    await create(client)
    body = notification(alert(clock))
    await post(client, body)
    await container.runner.run_once()
    assert (await pair(client))["state"] == "firing"  # the runner leaves alert pairs alone
    clock.advance(container.settings.alert_stale_seconds - 1)
    await container.runner.run_once()
    assert (await pair(client))["state"] == "firing"
    clock.advance(2)
    await container.runner.run_once()
    assert (await pair(client))["state"] == "resolved"
    [stale] = (await client.get("/api/v1/alerts", params={"status": "stale"})).json()["alerts"]
    assert stale["fingerprint"] == "a1b2c3d4e5f60718"
    assert (await client.get("/api/v1/alerts", params={"status": "firing"})).json()["total"] == 0
    # Alertmanager comes back: the same alert does not act a second time.
    answer = await post(client, body)
    assert answer["alerts"][0]["decisions"] == []
    assert (await client.get("/api/v1/actions")).json()["total"] == 1
    # Pruned with the samples.
    clock.advance(container.settings.metrics_retention_seconds + 1)
    await container.runner.run_once()
    assert (await client.get("/api/v1/alerts")).json()["total"] == 0


async def test_an_action_whose_alert_went_stale_is_not_called_verified(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    """The episode ends because Alertmanager fell silent, not because the alert resolved:
    whether the action worked is not known, and the action says so."""
    stale_after = container.settings.alert_stale_seconds
    await create(client, verify={"within_seconds": stale_after * 2})
    [result] = (await post(client, notification(alert(clock))))["alerts"]
    action_id = result["decisions"][0]["action_id"]
    await complete(container, action_id)
    await container.runner.run_once()
    assert (await client.get(f"/api/v1/actions/{action_id}")).json()["verification"] is None
    clock.advance(stale_after + 1)
    await container.runner.run_once()
    assert (await pair(client))["state"] == "resolved"
    action = (await client.get(f"/api/v1/actions/{action_id}")).json()
    assert action["verification"]["result"] == "inconclusive"
    history = (await client.get(f"/api/v1/actions/{action_id}/history")).json()
    assert any("went stale" in (h["reason"] or "") for h in history), history
    metrics = (await client.get("/metrics")).text
    assert 'vigil_verifications_total{result="inconclusive"} 1.0' in metrics


async def test_an_action_whose_alert_resolved_is_verified(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    await create(client)
    firing = alert(clock)
    [result] = (await post(client, notification(firing)))["alerts"]
    action_id = result["decisions"][0]["action_id"]
    await complete(container, action_id)
    clock.advance(5)
    await post(client, notification({**firing, "status": "resolved", "endsAt": stamp(clock.now())}))
    await container.runner.run_once()
    action = (await client.get(f"/api/v1/actions/{action_id}")).json()
    assert action["verification"]["result"] == "verified"


async def test_alert_policies_are_listed_described_and_not_backtested(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    await create(client)
    assert (await client.get("/api/v1/policies")).status_code == 200
    assert (await client.get("/api/v1/policies/high-cpu")).status_code == 200
    assert (await client.get("/api/v1/policies/high-cpu/state")).status_code == 200
    dry = await client.post(
        "/api/v1/policies/evaluate", json={"target": "web-1", "metrics": {"cpu": 99}}
    )
    assert dry.status_code == 200, dry.text
    assert "high-cpu" in dry.json()["needs_history"]
    start = stamp(clock.now() - timedelta(hours=1))
    backtest = await client.post(
        "/api/v1/policies/high-cpu/backtest", json={"from": start, "to": stamp(clock.now())}
    )
    assert backtest.status_code == 422, backtest.text
    assert "alert policies are not backtested" in backtest.text
    await container.runner.run_once()
    assert container.runner.last_error is None


async def test_samples_of_a_target_leave_its_alert_episode_alone(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    await create(client)
    hot = {
        "name": "cpu-hot",
        "target": "web-*",
        "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
        "action": "scale-up",
    }
    assert (await client.post("/api/v1/policies", json=hot)).status_code == 201
    await post(client, notification(alert(clock)))
    for value in (95, 10):
        response = await client.post(
            "/api/v1/ingest", json={"name": "cpu", "value": value, "target": "web-1"}
        )
        assert response.status_code == 201, response.text
    await container.runner.run_once()
    assert container.runner.last_error is None
    assert (await pair(client))["state"] == "firing"


async def test_a_silence_on_an_alert_label_holds_its_violation_back(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client)
    silence = {
        "matchers": {"tags": {"job": "node", "alertname": "HighCPU"}},
        "ends_at": stamp(clock.now() + timedelta(hours=1)),
        "comment": "maintenance",
    }
    assert (await client.post("/api/v1/silences", json=silence)).status_code == 201
    [result] = (await post(client, notification(alert(clock))))["alerts"]
    [decision] = result["decisions"]
    assert decision["suppressed"] == "silenced"
    assert "action_id" not in decision


async def test_the_same_notification_sent_at_once_acts_once(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client)
    without_target = alert(clock, fingerprint="f0")
    del without_target["labels"]["instance"], without_target["labels"]["job"]
    body = notification(alert(clock), without_target)
    answers = await asyncio.gather(*(post(client, body) for _ in range(5)))
    made = [d for a in answers for r in a["alerts"] for d in r["decisions"]]
    assert len(made) == 1
    assert (await client.get("/api/v1/actions")).json()["total"] == 1
    assert (await client.get("/api/v1/decisions")).json()["total"] == 1
    assert (await client.get("/api/v1/alerts")).json()["total"] == 2


async def test_a_pair_its_policy_no_longer_matches_settles_in_the_runner(
    client: httpx.AsyncClient, clock: FakeClock, container: Container
) -> None:
    await create(client)
    await post(client, notification(alert(clock)))
    await container.runner.run_once()
    assert (await pair(client))["state"] == "firing"
    changed = {**POLICY, "condition": {**POLICY["condition"], "matchers": {"severity": "page"}}}
    response = await client.put("/api/v1/policies/high-cpu", json=changed)
    assert response.status_code == 200, response.text
    await container.runner.run_once()
    assert (await pair(client))["state"] == "resolved"
    [stored] = (await client.get("/api/v1/alerts")).json()["alerts"]
    assert stored["status"] == "firing"  # the alert itself is still firing


async def test_an_episode_held_back_by_the_pause_acts_at_the_next_repeat(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client)
    assert (
        await client.post("/api/v1/automation/pause", json={"reason": "deploy"})
    ).status_code == 200
    body = notification(alert(clock))
    [held] = (await post(client, body))["alerts"][0]["decisions"]
    assert held["suppressed"] == "paused"
    [again] = (await post(client, body))["alerts"][0]["decisions"]
    assert again["suppressed"] == "paused"  # counted on the same decision
    assert (await client.post("/api/v1/automation/resume", json={})).status_code == 200
    [acted] = (await post(client, body))["alerts"][0]["decisions"]
    assert "action_id" in acted
    assert (await post(client, body))["alerts"][0]["decisions"] == []
    assert (await client.get("/api/v1/actions")).json()["total"] == 1
    assert (await client.get("/api/v1/decisions")).json()["total"] == 2
