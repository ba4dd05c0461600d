"""Firing episodes, the guards that count, approval, decisions and the runner's conditions,
through the API on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.api.support import audit_rows, table_counts
from vigil.actions.status import Status
from vigil.actions.store import transition
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.db.tables import policy_states
from vigil.observability.audit import Actor

FOR_CPU: dict[str, Any] = {
    "type": "threshold",
    "metric": "cpu",
    "operator": ">",
    "threshold": 90,
    "for": "30s",
}
BASE_POLICY: dict[str, Any] = {
    "name": "cpu-hot",
    "target": "web-*",
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
    "action": "scale-up",
    "cooldown_seconds": 0,
}


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/policies", json={**BASE_POLICY, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def send(
    client: httpx.AsyncClient,
    value: float,
    target: str = "web-01",
    name: str = "cpu",
    ago: float | None = None,
    clock: FakeClock | None = None,
    **tags: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "value": value, "target": target, "tags": tags}
    if ago is not None:
        assert clock is not None
        body["timestamp"] = (clock.now() - timedelta(seconds=ago)).isoformat()
    response = await client.post("/api/v1/ingest", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def state(client: httpx.AsyncClient, policy: str = "cpu-hot") -> dict[str, Any]:
    response = await client.get(f"/api/v1/policies/{policy}/state")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def target_state(client: httpx.AsyncClient, target: str, policy: str = "cpu-hot") -> Any:
    for item in (await state(client, policy))["targets"]:
        if item["target"] == target:
            return item
    return None


async def decisions(client: httpx.AsyncClient, **query: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/decisions", params=query)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["decisions"]
    return items


async def notifications(client: httpx.AsyncClient, event: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/notifications", params={"event": event})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["notifications"]
    return items


def suppressed(body: dict[str, Any]) -> list[str | None]:
    return [v.get("suppressed") for v in body["violations"]]


async def end(client: httpx.AsyncClient, action_id: int) -> None:
    response = await client.put(f"/api/v1/actions/{action_id}/cancel", json={})
    assert response.status_code == 200, response.text


# --- episodes ---------------------------------------------------------------------------


async def test_a_policy_acts_once_per_firing_episode(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create(client)
    first = await send(client, 95)
    [action] = first["actions"]
    assert (await target_state(client, "web-01"))["state"] == "firing"

    still = await send(client, 96)
    assert still["actions"] == []
    assert suppressed(still) == ["action already open"]
    again = await send(client, 97)
    assert suppressed(again) == ["action already open"]
    await end(client, action["action_id"])
    after_end = await send(client, 98)
    assert after_end["actions"] == []
    assert suppressed(after_end) == [None]

    resolved = await send(client, 50)
    assert resolved["violations"] == []
    pair = await target_state(client, "web-01")
    assert pair["state"] == "resolved"
    assert pair["episode"] == 1
    assert pair["resolved_at"] is not None

    second = await send(client, 95)
    [new_action] = second["actions"]
    assert new_action["action_id"] != action["action_id"]
    assert (await target_state(client, "web-01"))["episode"] == 2

    rows = await decisions(client, policy="cpu-hot")
    # Newest first: the second episode's action, the repeated suppression (counted on one
    # row), the first episode's action. The violation after the action ended attempted
    # nothing and left no row.
    assert [(d["episode"], d["outcome"], d["reason"], d["count"]) for d in rows] == [
        (2, "acted", None, 1),
        (1, "suppressed", "action already open", 2),
        (1, "acted", None, 1),
    ]
    assert rows[0]["action_id"] == new_action["action_id"]
    assert rows[2]["value"] == 95


async def test_a_sample_resolves_only_its_own_policies_in_the_same_group(
    client: httpx.AsyncClient,
) -> None:
    await create(client)
    batch = [
        {"name": "cpu", "value": 95, "target": "web-01"},
        {"name": "cpu", "value": 20, "target": "web-01"},
        {"name": "cpu", "value": 96, "target": "web-01"},
        {"name": "cpu", "value": 97, "target": "web-02"},
    ]
    response = await client.post("/api/v1/ingest/batch", json={"metrics": batch})
    assert response.status_code == 201, response.text
    body = response.json()
    # web-01 fired, resolved and fired again within one request: two episodes; the second
    # is held back by the first's open action.
    assert [(v["target"], v.get("suppressed")) for v in body["violations"]] == [
        ("web-01", None),
        ("web-01", "action already open"),
        ("web-02", None),
    ]
    assert (await target_state(client, "web-01"))["episode"] == 2


async def test_clear_gives_hysteresis(client: httpx.AsyncClient) -> None:
    await create(
        client,
        condition={"type": "threshold", "metric": "cpu", "operator": ">", "threshold": 90},
        clear={"type": "threshold", "metric": "cpu", "operator": "<", "threshold": 70},
    )
    [action] = (await send(client, 95))["actions"]
    await end(client, action["action_id"])
    await send(client, 80)  # below the condition, above the clear threshold
    assert (await target_state(client, "web-01"))["state"] == "firing"
    assert (await send(client, 95))["actions"] == []  # the same episode: no new action
    await send(client, 65)
    assert (await target_state(client, "web-01"))["state"] == "resolved"
    assert len((await send(client, 95))["actions"]) == 1


async def test_an_episode_held_back_by_the_pause_acts_once_it_is_lifted(
    client: httpx.AsyncClient,
) -> None:
    await create(client)
    paused = await client.post("/api/v1/automation/pause", json={"reason": "maintenance"})
    assert paused.status_code == 200
    assert suppressed(await send(client, 95)) == ["paused"]
    assert suppressed(await send(client, 96)) == ["paused"]
    assert (await client.post("/api/v1/automation/resume", json={})).status_code == 200
    resumed = await send(client, 97)
    assert len(resumed["actions"]) == 1
    rows = await decisions(client)
    assert [(d["outcome"], d["reason"], d["count"]) for d in rows] == [
        ("acted", None, 1),
        ("suppressed", "paused", 2),
    ]
    assert {d["episode"] for d in rows} == {1}


async def test_shadow_and_record_only_outcomes(client: httpx.AsyncClient) -> None:
    await create(client, name="shadowed", shadow=True)
    await create(client, name="watch-only", auto_remediate=False)
    body = await send(client, 95)
    assert body["actions"] == []
    assert sorted(suppressed(body)) == ["not auto-remediated", "shadow"]  # type: ignore[type-var]
    by_policy = {d["policy_name"]: d for d in await decisions(client)}
    assert by_policy["shadowed"]["outcome"] == "shadow"
    assert by_policy["watch-only"]["outcome"] == "recorded"
    assert [d["policy_name"] for d in await decisions(client, outcome="shadow")] == ["shadowed"]


# --- breaker and blast radius -------------------------------------------------------------


async def test_the_circuit_breaker_opens_past_max_actions_per_hour_and_resets(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create(client, max_actions_per_hour=2)
    for target in ("web-01", "web-02"):
        assert len((await send(client, 95, target))["actions"]) == 1
    third = await send(client, 95, "web-03")
    assert third["actions"] == []
    assert suppressed(third) == ["circuit open"]
    breaker = (await state(client))["breaker"]
    assert breaker["open"] is True
    assert breaker["actions_last_hour"] == 2
    assert breaker["opened_at"] is not None
    assert suppressed(await send(client, 95, "web-04")) == ["circuit open"]
    [opened] = await notifications(client, "breaker_opened")  # once, not per suppression
    assert (opened["policy_name"], opened["target"]) == ("cpu-hot", "web-03")

    # The breaker holds for the whole episode, even once it closes.
    reset = await client.post("/api/v1/policies/cpu-hot/reset")
    assert reset.status_code == 200, reset.text
    assert reset.json()["breaker"]["open"] is False
    assert suppressed(await send(client, 96, "web-03")) == ["circuit open"]
    # A new episode after the reset acts.
    await send(client, 10, "web-03")
    assert len((await send(client, 95, "web-03"))["actions"]) == 1
    [audited] = [r for r in await audit_rows(container) if r["kind"] == "policy.breaker_reset"]
    assert audited["subject"] == "policy:cpu-hot"
    assert audited["before"]["open"] is True
    assert audited["after"]["open"] is False


async def test_the_breaker_closes_after_the_hour(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create(client, max_actions_per_hour=1)
    assert len((await send(client, 95, "web-01"))["actions"]) == 1
    assert suppressed(await send(client, 95, "web-02")) == ["circuit open"]
    clock.advance(3601)
    assert (await state(client))["breaker"]["open"] is False
    assert len((await send(client, 95, "web-03"))["actions"]) == 1


async def test_blast_radius_limits_targets_with_an_open_action(
    client: httpx.AsyncClient,
) -> None:
    await create(client, max_concurrent_targets=1)
    [first] = (await send(client, 95, "web-01"))["actions"]
    blocked = await send(client, 95, "web-02")
    assert suppressed(blocked) == ["max concurrent targets"]
    assert (await state(client))["breaker"]["open_targets"] == 1
    await end(client, first["action_id"])
    # The episode held back by the blast radius tries again at its next violation.
    assert len((await send(client, 96, "web-02"))["actions"]) == 1


async def test_reset_of_an_unknown_policy_is_404_and_changes_nothing(
    client: httpx.AsyncClient, container: Container
) -> None:
    before = await table_counts(container)
    response = await client.post("/api/v1/policies/nope/reset")
    assert response.status_code == 404
    assert (await client.get("/api/v1/policies/nope/state")).status_code == 404
    assert await table_counts(container) == before


# --- approval ---------------------------------------------------------------------------


async def test_approval_required_waits_for_an_operator(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create(client, approval_required=True)
    [waiting] = (await send(client, 95, "web-01"))["actions"]
    assert waiting["status"] == "awaiting_approval"
    assert await container.queue.depth() == 0  # not dispatched
    [note] = await notifications(client, "approval_waiting")
    assert note["action_id"] == waiting["action_id"]
    assert f"/api/v1/actions/{waiting['action_id']}/approve" in note["reason"]
    # Still open: a second violation is held back by it.
    assert suppressed(await send(client, 96, "web-01")) == ["action already open"]

    approved = await client.post(
        f"/api/v1/actions/{waiting['action_id']}/approve", json={"comment": "go"}
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "pending"
    assert await container.queue.depth() == 1
    again = await client.post(f"/api/v1/actions/{waiting['action_id']}/approve")
    assert again.status_code == 409
    history = (await client.get(f"/api/v1/actions/{waiting['action_id']}/history")).json()
    assert [(h["from"], h["to"]) for h in history] == [
        (None, "awaiting_approval"),
        ("awaiting_approval", "pending"),
    ]
    assert history[1]["reason"] == "approved by anonymous: go"

    [other] = (await send(client, 95, "web-02"))["actions"]
    rejected = await client.post(f"/api/v1/actions/{other['action_id']}/reject")
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "cancelled"
    assert (await client.post("/api/v1/actions/999999/approve")).status_code == 404


async def test_an_unapproved_action_expires_to_cancelled(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(client, approval_required=True, approval_timeout_seconds="10m")
    [waiting] = (await send(client, 95))["actions"]
    clock.advance(599)
    await container.runner.run_once()
    response = await client.get(f"/api/v1/actions/{waiting['action_id']}")
    assert response.json()["status"] == "awaiting_approval"
    clock.advance(1)
    # Timed out, though the runner has not cancelled it yet: too late to approve.
    late = await client.post(f"/api/v1/actions/{waiting['action_id']}/approve")
    assert late.status_code == 409
    assert "timed out" in late.json()["detail"]
    await container.runner.run_once()
    action = (await client.get(f"/api/v1/actions/{waiting['action_id']}")).json()
    assert action["status"] == "cancelled"
    history = (await client.get(f"/api/v1/actions/{waiting['action_id']}/history")).json()
    assert history[-1]["reason"] == "approval timed out"


# --- the runner's conditions -------------------------------------------------------------


async def test_a_for_condition_goes_pending_then_fires_in_the_runner(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(
        client,
        condition={
            "type": "threshold",
            "metric": "cpu",
            "operator": ">",
            "threshold": 90,
            "for": "30s",
        },
    )
    body = await send(client, 95, ago=10, clock=clock)
    assert body["violations"] == []  # ingest does not judge a 'for'
    await send(client, 96, ago=0, clock=clock)
    await container.runner.run_once()
    pair = await target_state(client, "web-01")
    assert pair["state"] == "pending"
    assert pair["pending_since"] is not None

    clock.advance(25)
    await send(client, 97, ago=0, clock=clock)
    await container.runner.run_once()
    pair = await target_state(client, "web-01")
    assert pair["state"] == "firing"
    assert pair["action_id"] is not None
    [row] = await decisions(client)
    assert (row["outcome"], row["action_id"]) == ("acted", pair["action_id"])

    # Firing with the action open: another pass counts the repeat, creates nothing.
    await container.runner.run_once()
    action = (await client.get(f"/api/v1/actions/{pair['action_id']}")).json()
    assert action["status"] == "pending"

    clock.advance(5)
    await send(client, 20, ago=0, clock=clock)
    await container.runner.run_once()
    assert (await target_state(client, "web-01"))["state"] == "resolved"


async def test_absent_fires_for_a_silent_target_and_pruning_does_not_resolve_it(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(
        client,
        name="heartbeat-lost",
        target="all",
        condition={"type": "absent", "metric": "heartbeat", "for": "1m"},
        action="restart-service",
    )
    await send(client, 1, "api-01", name="heartbeat")
    await container.runner.run_once()
    assert await target_state(client, "api-01", "heartbeat-lost") is None  # alive

    clock.advance(61)
    await container.runner.run_once()
    pair = await target_state(client, "api-01", "heartbeat-lost")
    assert pair["state"] == "firing"
    action = (await client.get(f"/api/v1/actions/{pair['action_id']}")).json()
    assert (action["action"], action["target"]) == ("restart-service", "api-01")

    # A day later every sample and latest value of the target is pruned: still absent.
    clock.advance(2 * 86400)
    await container.runner.run_once()
    assert (await target_state(client, "api-01", "heartbeat-lost"))["state"] == "firing"

    await send(client, 1, "api-01", name="heartbeat")
    await container.runner.run_once()
    assert (await target_state(client, "api-01", "heartbeat-lost"))["state"] == "resolved"


async def test_a_window_average_fires_in_the_runner(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(
        client,
        condition={
            "type": "threshold",
            "metric": "cpu",
            "operator": ">",
            "threshold": 80,
            "window": "1m",
            "aggregate": "avg",
        },
    )
    for ago, value in ((50, 70), (30, 80), (10, 85)):
        await send(client, value, ago=ago, clock=clock)
    await container.runner.run_once()
    assert await target_state(client, "web-01") is None  # avg 78.3
    await send(client, 99, ago=0, clock=clock)
    await container.runner.run_once()
    assert (await target_state(client, "web-01"))["state"] == "firing"  # avg 83.5


async def test_an_expression_reads_metrics_and_tags_on_ingest(client: httpx.AsyncClient) -> None:
    await create(
        client,
        condition={"type": "expr", "expression": 'cpu > 90 and tags.region == "eu"'},
    )
    assert (await send(client, 95, "web-01", region="us"))["violations"] == []
    body = await send(client, 95, "web-02", region="eu")
    assert [v["target"] for v in body["violations"]] == ["web-02"]
    assert len(body["actions"]) == 1


# --- decisions and the dry run -----------------------------------------------------------


async def test_decisions_filter_and_paginate(client: httpx.AsyncClient) -> None:
    await create(client)
    for target in ("web-01", "web-02", "web-03"):
        await send(client, 95, target)
    page = await client.get("/api/v1/decisions", params={"limit": 2, "page": 2})
    assert page.status_code == 200
    body = page.json()
    assert (body["count"], body["total"], body["page"], body["page_size"]) == (1, 3, 2, 2)
    assert [d["target"] for d in body["decisions"]] == ["web-01"]
    assert [d["target"] for d in await decisions(client, target="web-02")] == ["web-02"]
    assert await decisions(client, outcome="suppressed") == []
    assert await decisions(client, end_time="2000-01-01T00:00:00Z") == []
    for bad in ({"outcome": "maybe"}, {"limit": 0}, {"limit": 501}, {"start_time": "soon"}):
        response = await client.get("/api/v1/decisions", params=bad)
        assert response.status_code == 422, bad


async def test_decisions_past_their_retention_are_pruned(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(client)
    await send(client, 95)
    clock.advance(29 * 86400)
    await container.runner.run_once()
    assert len(await decisions(client)) == 1
    clock.advance(2 * 86400)
    await container.runner.run_once()
    assert await decisions(client) == []


async def test_evaluate_names_the_conditions_that_need_history(
    client: httpx.AsyncClient, container: Container
) -> None:
    await create(
        client,
        name="sustained",
        condition={
            "type": "threshold",
            "metric": "cpu",
            "operator": ">",
            "threshold": 90,
            "for": "2m",
        },
    )
    await create(
        client,
        name="heartbeat",
        condition={"type": "absent", "metric": "heartbeat", "for": "1m"},
    )
    before = await table_counts(container)
    response = await client.post(
        "/api/v1/policies/evaluate", json={"metrics": {"cpu": 95}, "target": "web-01"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # Taken as sustained: the 'for' holds, and a heartbeat never sent is absent.
    assert sorted(v["policy_name"] for v in body["violations"]) == ["heartbeat", "sustained"]
    assert body["needs_history"] == {
        "heartbeat": ["condition: absence of heartbeat for 60s"],
        "sustained": ["condition: 'for' 120s of samples of cpu"],
    }
    assert await table_counts(container) == before


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        (
            {"condition": {"type": "threshold", "metric": "cpu", "operator": "~", "threshold": 1}},
            ["body", "condition", "threshold", "operator"],
        ),
        (
            {"condition": {"type": "expr", "expression": "().__class__"}},
            ["body", "condition", "expr", "expression"],
        ),
        ({"max_actions_per_hour": 0}, ["body", "max_actions_per_hour"]),
        ({"max_concurrent_targets": "2"}, ["body", "max_concurrent_targets"]),
        ({"approval_timeout_seconds": 0}, ["body", "approval_timeout_seconds"]),
        ({"clear": {"type": "nope"}}, ["body", "clear"]),
    ],
)
async def test_invalid_policy_fields_are_422_naming_the_field(
    client: httpx.AsyncClient, container: Container, fields: dict[str, Any], loc: list[str]
) -> None:
    before = await table_counts(container)
    response = await client.post("/api/v1/policies", json={**BASE_POLICY, **fields})
    assert response.status_code == 422, response.text
    locs = [e["loc"][: len(loc)] for e in response.json()["detail"]]
    assert loc in locs, locs
    assert await table_counts(container) == before


# --- verification and escalation ----------------------------------------------------------


async def complete(container: Container, action_id: int) -> None:
    """Run an action to `completed` as a worker would."""
    now = container.clock.now()
    async with container.database.write() as conn:
        for to in (Status.RUNNING, Status.COMPLETED):
            await transition(
                conn, action_id=action_id, to=to, now=now, actor=Actor("worker"), reason="test"
            )


VERIFIED_POLICY: dict[str, Any] = {
    "verify": {"within_seconds": 60},
    "escalate": ["restart-service"],
}


async def test_a_fix_that_works_is_verified(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(client, **VERIFIED_POLICY)
    [action] = (await send(client, 95))["actions"]
    await complete(container, action["action_id"])
    await container.runner.run_once()
    detail = (await client.get(f"/api/v1/actions/{action['action_id']}")).json()
    assert detail["verification"] is None  # not resolved yet, window still open
    clock.advance(30)
    await send(client, 40)  # resolved
    await container.runner.run_once()
    detail = (await client.get(f"/api/v1/actions/{action['action_id']}")).json()
    assert detail["verification"]["result"] == "verified"
    history = (await client.get(f"/api/v1/actions/{action['action_id']}/history")).json()
    assert history[-1]["reason"].startswith("verification: verified")
    assert (await client.get("/api/v1/actions", params={"status": "pending"})).json()["total"] == 0


async def test_a_failed_verification_escalates_until_the_list_is_exhausted(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(client, **VERIFIED_POLICY)
    [action] = (await send(client, 95, service="nginx"))["actions"]
    await complete(container, action["action_id"])
    clock.advance(61)
    await send(client, 96, service="other")  # still hot
    await container.runner.run_once()
    detail = (await client.get(f"/api/v1/actions/{action['action_id']}")).json()
    assert detail["verification"]["result"] == "failed"
    pair = await target_state(client, "web-01")
    assert pair["state"] == "firing"
    assert pair["action_id"] != action["action_id"]
    escalation = (await client.get(f"/api/v1/actions/{pair['action_id']}")).json()
    assert (escalation["action"], escalation["status"]) == ("restart-service", "pending")
    assert escalation["tags"] == {"service": "nginx"}  # the episode's, from its first sample
    assert [d["outcome"] for d in await decisions(client)] == ["acted", "acted"]

    await complete(container, escalation["id"])
    clock.advance(61)
    await container.runner.run_once()
    assert (await client.get(f"/api/v1/actions/{escalation['id']}")).json()["verification"][
        "result"
    ] == "failed"
    pair = await target_state(client, "web-01")
    assert pair["escalated_at"] is not None
    assert pair["action_id"] == escalation["id"]  # nothing further was created
    [note] = await notifications(client, "escalation_exhausted")
    assert (note["policy_name"], note["target"], note["action_id"]) == (
        "cpu-hot",
        "web-01",
        escalation["id"],
    )
    total = (await client.get("/api/v1/actions")).json()["total"]
    assert total == 2
    assert 'vigil_verifications_total{result="failed"} 2.0' in (await client.get("/metrics")).text


async def test_an_escalation_action_must_be_known(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/policies", json={**BASE_POLICY, "escalate": ["scale-up", "teleport"]}
    )
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "escalate", 1]]


# --- backtest -------------------------------------------------------------------------------


async def test_backtest_replays_stored_samples_and_changes_nothing(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(client, auto_remediate=False)  # it never acted on these samples
    for ago, target, value in (
        (500, "web-01", 95),
        (490, "web-01", 96),
        (400, "web-01", 40),
        (300, "web-01", 97),
        (200, "web-02", 99),
        (100, "db-01", 99),  # not a web-* target
    ):
        await send(client, value, target, ago=ago, clock=clock)
    start = (clock.now() - timedelta(minutes=10)).isoformat()
    end = clock.now().isoformat()
    before = await table_counts(container)

    saved = await client.post("/api/v1/policies/cpu-hot/backtest", json={"from": start, "to": end})
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert (body["ok"], body["policy"], body["samples"]) == (True, "cpu-hot", 5)
    assert [(d["target"], d["episode"], d["outcome"]) for d in body["decisions"]] == [
        ("web-01", 1, "recorded"),
        ("web-01", 2, "recorded"),
        ("web-02", 1, "recorded"),
    ]

    # The same policy as it would be: acting, with a cooldown that holds back episode 2.
    unsaved = await client.post(
        "/api/v1/policies/backtest",
        json={
            "policy": {**BASE_POLICY, "name": "draft", "cooldown_seconds": "10m"},
            "from": start,
            "to": end,
        },
    )
    assert unsaved.status_code == 200, unsaved.text
    summary = unsaved.json()["summary"]
    assert summary["acted"] == 2
    assert summary["suppressed"] == {"action already open": 1, "cooldown": 1}
    assert summary["targets"]["web-01"]["acted"] == 1
    first = datetime.fromisoformat(summary["targets"]["web-02"]["first"])
    assert first == clock.now() - timedelta(seconds=200)
    assert await table_counts(container) == before


async def test_backtest_refuses_bad_requests(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await create(client)
    now = clock.now().isoformat()
    earlier = (clock.now() - timedelta(hours=1)).isoformat()
    unknown = await client.post("/api/v1/policies/nope/backtest", json={"from": earlier, "to": now})
    assert unknown.status_code == 404
    backwards = await client.post(
        "/api/v1/policies/cpu-hot/backtest", json={"from": now, "to": earlier}
    )
    assert backwards.status_code == 422
    assert backwards.json()["detail"][0]["loc"] == ["body", "to"]
    invalid = await client.post(
        "/api/v1/policies/backtest",
        json={"policy": {**BASE_POLICY, "action": "teleport"}, "from": earlier, "to": now},
    )
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "policy", "action"]
    missing = await client.post("/api/v1/policies/cpu-hot/backtest", json={"to": now})
    assert missing.status_code == 422
    # The whole calendar: the end is clamped to now; an instant policy needs no passes...
    everything = {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"}
    whole = await client.post("/api/v1/policies/cpu-hot/backtest", json=everything)
    assert whole.status_code == 200, whole.text
    assert whole.json()["to"] == now.replace("+00:00", "Z")
    # ... but one judged by the runner would take too many passes.
    sustained = {**BASE_POLICY, "condition": {**FOR_CPU}}
    too_long = await client.post(
        "/api/v1/policies/backtest", json={"policy": sustained, **everything}
    )
    assert too_long.status_code == 422
    assert "runner passes" in too_long.json()["detail"][0]["msg"]


async def test_decisions_are_counted_by_outcome_and_reason(client: httpx.AsyncClient) -> None:
    await create(client, name="shadowed", shadow=True)
    await create(client, name="acting")
    await send(client, 95)
    await send(client, 96)  # 'acting' is open: suppressed; 'shadowed' repeats its shadow
    text = (await client.get("/metrics")).text
    for line in (
        'vigil_decisions_total{outcome="acted",reason=""} 1.0',
        'vigil_decisions_total{outcome="shadow",reason="shadow"} 2.0',
        'vigil_decisions_total{outcome="suppressed",reason="action already open"} 1.0',
        'vigil_policy_violations_total{policy_name="acting",severity="warning"} 2.0',
    ):
        assert line in text, line


async def test_http_requests_are_counted_by_route_template(client: httpx.AsyncClient) -> None:
    await create(client)
    await client.get("/api/v1/actions/12345")  # 404, counted under its template
    await client.get("/no/such/path")
    text = (await client.get("/metrics")).text
    for line in (
        'vigil_http_requests_total{method="POST",route="/api/v1/policies",status="201"} 1.0',
        'vigil_http_requests_total{method="GET",route="/api/v1/actions/{action_id}",status="404"}'
        " 1.0",
        'vigil_http_requests_total{method="GET",route="unmatched",status="404"} 1.0',
        'vigil_http_request_duration_seconds_count{method="POST",route="/api/v1/policies"} 1.0',
    ):
        assert line in text, line
    assert "/api/v1/actions/12345" not in text  # the path itself is never a label


# --- regressions -------------------------------------------------------------------------


async def batch(client: httpx.AsyncClient, *items: tuple[str, float]) -> dict[str, Any]:
    metrics = [{"name": "cpu", "value": value, "target": target} for target, value in items]
    response = await client.post("/api/v1/ingest/batch", json={"metrics": metrics})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_firing_and_resolving_in_one_batch_ends_resolved(client: httpx.AsyncClient) -> None:
    await create(client)
    body = await batch(client, ("web-01", 95), ("web-01", 20))
    assert len(body["actions"]) == 1
    pair = await target_state(client, "web-01")
    assert (pair["state"], pair["episode"], pair["acted"]) == ("resolved", 1, True)
    assert pair["action_id"] == body["actions"][0]["action_id"]


async def test_a_second_sample_in_the_same_batch_follows_the_first(
    client: httpx.AsyncClient,
) -> None:
    await create(client, max_actions_per_hour=1)
    await send(client, 95, "web-01")
    body = await batch(client, ("web-02", 95), ("web-02", 96))
    assert suppressed(body) == ["circuit open", "circuit open"]
    [row] = await decisions(client, target="web-02")
    assert (row["reason"], row["count"]) == ("circuit open", 2)
    # The breaker's suppression holds for the whole episode, even after a reset.
    assert (await client.post("/api/v1/policies/cpu-hot/reset")).status_code == 200
    assert suppressed(await send(client, 97, "web-02")) == ["circuit open"]


async def test_an_instant_condition_with_a_for_clear_resolves_in_the_runner(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(
        client,
        clear={
            "type": "threshold",
            "metric": "cpu",
            "operator": "<",
            "threshold": 70,
            "for": "30s",
        },
    )
    await send(client, 95)
    for _ in range(5):
        clock.advance(10)
        await send(client, 20, ago=0, clock=clock)
        await container.runner.run_once()
    assert (await target_state(client, "web-01"))["state"] == "resolved"


async def test_a_pair_the_policy_no_longer_targets_settles(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    window = {
        "type": "threshold",
        "metric": "cpu",
        "operator": ">",
        "threshold": 80,
        "window": "1m",
        "aggregate": "max",
    }
    await create(client, condition=window)
    await send(client, 95, ago=0, clock=clock)
    await container.runner.run_once()
    assert (await target_state(client, "web-01"))["state"] == "firing"
    response = await client.put("/api/v1/policies/cpu-hot", json={"target": "api-*"})
    assert response.status_code == 200
    await container.runner.run_once()
    assert (await target_state(client, "web-01"))["state"] == "resolved"


async def test_an_escalation_held_back_by_the_pause_runs_once_it_is_lifted(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(client, **VERIFIED_POLICY)
    [action] = (await send(client, 95))["actions"]
    await complete(container, action["action_id"])
    await client.post("/api/v1/automation/pause", json={"reason": "change freeze"})
    clock.advance(61)
    await container.runner.run_once()
    await container.runner.run_once()
    detail = (await client.get(f"/api/v1/actions/{action['action_id']}")).json()
    assert detail["verification"] is None  # decided once the escalation can happen
    [held] = await decisions(client, outcome="suppressed")
    assert (held["reason"], held["count"]) == ("paused", 2)
    # The counters say the same: no verdict yet, two held-back escalation decisions.
    registry = container.metrics.registry
    verdicts = {"result": "failed"}
    assert registry.get_sample_value("vigil_verifications_total", verdicts) is None
    paused = {"outcome": "suppressed", "reason": "paused"}
    assert registry.get_sample_value("vigil_decisions_total", paused) == 2

    await client.post("/api/v1/automation/resume", json={})
    await container.runner.run_once()
    detail = (await client.get(f"/api/v1/actions/{action['action_id']}")).json()
    assert detail["verification"]["result"] == "failed"
    assert registry.get_sample_value("vigil_verifications_total", verdicts) == 1
    acted = {"outcome": "acted", "reason": ""}
    assert registry.get_sample_value("vigil_decisions_total", acted) == 2  # first, escalation
    pair = await target_state(client, "web-01")
    escalation = (await client.get(f"/api/v1/actions/{pair['action_id']}")).json()
    assert escalation["action"] == "restart-service"


async def test_a_resolved_episode_is_never_escalated(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(client)  # no verify yet
    [action] = (await send(client, 95))["actions"]
    await complete(container, action["action_id"])
    clock.advance(120)
    await send(client, 20)  # resolved two minutes after the action completed
    # verify is added later, with a window the old episode did not meet.
    assert (await client.put("/api/v1/policies/cpu-hot", json=VERIFIED_POLICY)).status_code == 200
    await container.runner.run_once()
    detail = (await client.get(f"/api/v1/actions/{action['action_id']}")).json()
    assert detail["verification"]["result"] == "failed"
    assert (await client.get("/api/v1/actions")).json()["total"] == 1  # no escalation
    assert await notifications(client, "escalation_exhausted") == []


async def test_a_repeated_suppression_counts_without_rewriting_the_pair(
    client: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    """While an episode keeps being held back for the same reason, each sample counts on
    its decision row; the pair's state row is not written again (ingest's hot path)."""
    await create(client, auto_remediate=False)
    await send(client, 95)

    async def pair_updated_at() -> datetime:
        async with container.database.read() as conn:
            row = (await conn.execute(select(policy_states.c.updated_at))).one()
        updated: datetime = row.updated_at
        return updated

    first = await pair_updated_at()
    for _ in range(3):
        clock.advance(5)
        await send(client, 96)
    [row] = await decisions(client)
    assert (row["outcome"], row["count"]) == ("recorded", 4)
    assert await pair_updated_at() == first
