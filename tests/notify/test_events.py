"""The notifications each change records, with what they are about (policy, target, action,
severity, tags, episode): the events that need a person always, the others only when a route
of the notifications file names them; on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests.api.test_alerts import alert, notification
from tests.conftest import CLIENT_HEADERS
from tests.helpers import wait_for_async
from vigil.actions.store import get_action
from vigil.api.app import create_app
from vigil.clock import FakeClock
from vigil.container import Container, build_container
from vigil.decide.verification import verify
from vigil.notify import store
from vigil.observability.audit import Actor
from vigil.policy.models import PolicySpec
from vigil.settings import Settings

REMEDIATIONS = """
remediations:
  - action: scale-up
    targets: "broken-*"
    plugin: command
    with: {argv: ["false"]}
    retries: {max_attempts: 1}
  - action: scale-up
    plugin: log
  - action: restart-service
    plugin: log
"""

NOWHERE = "http://127.0.0.1:9/hook"
"""A webhook nobody answers: what is recorded matters here, not what is delivered."""

ROUTED = f"""
channels:
  - name: ops
    type: webhook
    url: {NOWHERE}
routes:
  - event: [action_completed, action_verified, action_unverified, episode_resolved]
    channels: [ops]
  - channels: [ops]
"""

UNROUTED = f"""
channels:
  - name: ops
    type: webhook
    url: {NOWHERE}
routes:
  - event: [action_failed, escalation_exhausted]
    channels: [ops]
  - channels: [ops]     # every event recorded: the optional ones are still not recorded
"""

OPTIONAL = {"action_completed", "action_verified", "action_unverified", "episode_resolved"}

POLICY: dict[str, Any] = {
    "name": "cpu-hot",
    "severity": "critical",
    "target": "*",
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
    "action": "scale-up",
    "cooldown_seconds": 0,
}
VERIFIED = {**POLICY, "verify": {"within_seconds": 60}}


@pytest.fixture
def routed() -> bool:
    """Whether the notifications file routes the optional events (parametrized to False)."""
    return True


@pytest.fixture
def settings_overrides(tmp_path: Path, routed: bool) -> dict[str, Any]:
    remediations = tmp_path / "remediations.yaml"
    remediations.write_text(REMEDIATIONS)
    notifications = tmp_path / "notifications.yaml"
    notifications.write_text(ROUTED if routed else UNROUTED)
    return {"remediations_file": remediations, "notifications_file": notifications}


@pytest.fixture
def container(settings: Settings, clock: FakeClock) -> Container:
    return build_container(settings, clock=clock)


@pytest.fixture
async def working(container: Container, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that runs its in-process worker (the runner's passes are the
    test's to make)."""
    application = create_app(settings, container, run_runner=False, run_worker=True)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://vigil.test", headers=CLIENT_HEADERS
        ) as c:
            yield c


async def create(client: httpx.AsyncClient, policy: dict[str, Any]) -> None:
    response = await client.post("/api/v1/policies", json=policy)
    assert response.status_code == 201, response.text


async def send(client: httpx.AsyncClient, value: float, target: str = "web-01") -> list[int]:
    """Ingest one cpu sample tagged service=nginx; the ids of the actions it created."""
    body = {"name": "cpu", "value": value, "target": target, "tags": {"service": "nginx"}}
    response = await client.post("/api/v1/ingest", json=body)
    assert response.status_code == 201, response.text
    return [int(a["action_id"]) for a in response.json()["actions"]]


async def completed_action(client: httpx.AsyncClient, target: str = "web-01") -> int:
    """A hot cpu sample on ``target``; the one action it created, once the worker has
    completed it (its notification commits with it)."""
    [action_id] = await send(client, 95, target)
    await settled(client, action_id, "completed")
    return action_id


async def settled(client: httpx.AsyncClient, action_id: int, status: str) -> None:
    """Wait for the in-process worker to take the action to ``status``."""

    async def reached() -> bool:
        action = (await client.get(f"/api/v1/actions/{action_id}")).json()
        return bool(action["status"] == status)

    await wait_for_async(reached, what=f"action {action_id} {status}")


async def recorded(container: Container) -> list[store.Notification]:
    """Every notification, oldest first."""
    async with container.database.read() as conn:
        rows, _ = await store.list_notifications(conn, page=1, limit=100)
    return sorted(rows, key=lambda n: n.id)


async def one(container: Container, event: str) -> store.Notification:
    [found] = [n for n in await recorded(container) if n.event == event]
    return found


def about(n: store.Notification) -> dict[str, Any]:
    return {
        "policy": n.policy_name,
        "target": n.target,
        "action_id": n.action_id,
        "severity": n.severity,
        "tags": n.tags,
        "episode": n.episode,
    }


def of_the_action(action_id: int) -> dict[str, Any]:
    return {
        "policy": "cpu-hot",
        "target": "web-01",
        "action_id": action_id,
        "severity": "critical",
        "tags": {"service": "nginx"},
        "episode": 1,
    }


async def test_a_completed_action_is_told_when_routed(
    working: httpx.AsyncClient, container: Container
) -> None:
    await create(working, POLICY)
    action_id = await completed_action(working)

    completed = await one(container, "action_completed")
    assert about(completed) == of_the_action(action_id)
    said = "dry run: would run scale-up on web-01"  # the log plugin's answer
    assert completed.reason == f"scale-up on web-01 succeeded at attempt 1: {said}"
    assert completed.details == {"action": "scale-up", "attempt": 1, "message": said}


async def test_a_verified_fix_and_the_episodes_end_are_told_when_routed(
    working: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(working, VERIFIED)
    action_id = await completed_action(working)
    clock.advance(30)
    await send(working, 40)  # resolved: the episode ends
    resolved = await one(container, "episode_resolved")
    assert about(resolved) == of_the_action(action_id)
    assert resolved.reason == "policy cpu-hot no longer fires for web-01: episode 1 resolved"
    assert resolved.details is not None
    assert resolved.details["duration_seconds"] == 30

    await container.runner.run_once()
    verified = await one(container, "action_verified")
    assert about(verified) == of_the_action(action_id)
    assert verified.reason == "scale-up on web-01: the policy resolved within 60s"
    assert verified.details == {"action": "scale-up", "result": "verified", "within_seconds": 60}
    await container.runner.run_once()  # a later pass tells nothing again
    assert [n.event for n in await recorded(container)] == [
        "action_completed",
        "episode_resolved",
        "action_verified",
    ]


async def test_a_fix_that_did_not_help_is_told_before_the_exhausted_escalation(
    working: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(working, VERIFIED)  # nothing to escalate to
    action_id = await completed_action(working)
    clock.advance(61)
    await send(working, 96)  # still hot
    await container.runner.run_once()

    events = [n.event for n in await recorded(container)]
    assert events == ["action_completed", "action_unverified", "escalation_exhausted"]
    unverified = await one(container, "action_unverified")
    assert about(unverified) == of_the_action(action_id)
    assert unverified.reason == "scale-up on web-01: the policy still fired 60s after it completed"
    exhausted = await one(container, "escalation_exhausted")
    assert about(exhausted) == of_the_action(action_id)


async def test_an_inconclusive_verification_tells_nothing(
    working: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(working, VERIFIED)
    await completed_action(working)
    await send(working, 40)
    before = [n.id for n in await recorded(container)]
    async with container.database.write() as conn:
        [outcome] = await verify(
            conn,
            policies={"cpu-hot": PolicySpec.model_validate(VERIFIED)},
            now=clock.now(),
            paused=False,
            silenced=lambda *_: False,
            actor=Actor(),
            unknown={("cpu-hot", "web-01"): 1},  # the episode ended for want of news
            wanted=container.notifications.recorded,
        )
    assert outcome.result == "inconclusive"
    assert [n.id for n in await recorded(container)] == before


@pytest.mark.parametrize("routed", [False])
async def test_nothing_optional_is_recorded_when_no_route_names_it(
    working: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    await create(working, VERIFIED)
    fixed = await completed_action(working)
    await send(working, 40)  # the episode ends
    await container.runner.run_once()  # verified
    await completed_action(working, "web-02")
    clock.advance(61)
    await send(working, 96, "web-02")
    await container.runner.run_once()  # unverified, and exhausted

    async with container.database.read() as conn:
        fixed_action = await get_action(conn, action_id=fixed)
    assert fixed_action.verification is not None
    assert fixed_action.verification["result"] == "verified"
    assert [n.event for n in await recorded(container)] == ["escalation_exhausted"]


@pytest.mark.parametrize("routed", [False])
async def test_a_pause_and_a_resume_are_told_once_each_whatever_the_routes(
    client: httpx.AsyncClient, container: Container
) -> None:
    for _ in range(2):
        response = await client.post("/api/v1/automation/pause", json={"reason": "db migration"})
        assert response.status_code == 200, response.text
    for _ in range(2):
        response = await client.post("/api/v1/automation/resume", json={})
        assert response.status_code == 200, response.text

    told = await recorded(container)
    assert [(n.event, n.reason) for n in told] == [
        (
            "automation_paused",
            "automation paused by anonymous: db migration; no new action is created until it"
            " is resumed",
        ),
        ("automation_resumed", "automation resumed by anonymous"),
    ]
    assert told[0].details == {"reason": "db migration", "by": "anonymous"}
    assert [about(n)["policy"] for n in told] == [None, None]


@pytest.mark.parametrize("routed", [False])
async def test_what_needs_a_person_carries_severity_tags_and_episode(
    working: httpx.AsyncClient, container: Container
) -> None:
    await create(working, {**POLICY, "max_actions_per_hour": 1})
    [failing] = await send(working, 95, "broken-01")
    await settled(working, failing, "failed")
    assert await send(working, 95, "web-01") == []  # the breaker opened

    failed = await one(container, "action_failed")
    assert about(failed) == {**of_the_action(failing), "target": "broken-01"}
    opened = await one(container, "breaker_opened")
    assert about(opened) == {**of_the_action(failing), "action_id": None}

    await create(working, {**POLICY, "name": "mem-hot", "approval_required": True})
    [waiting] = await send(working, 95, "db-01")
    note = await one(container, "approval_waiting")
    expected = {**of_the_action(waiting), "policy": "mem-hot", "target": "db-01"}
    assert about(note) == expected


@pytest.mark.parametrize("routed", [False])
async def test_pauses_asked_at_once_are_told_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    answers = await asyncio.gather(
        *(client.post("/api/v1/automation/pause", json={"reason": f"r{i}"}) for i in range(5))
    )
    assert [a.status_code for a in answers] == [200] * 5
    assert [n.event for n in await recorded(container)] == ["automation_paused"]


async def test_an_alerts_episode_end_is_told_whether_resolved_or_gone_stale(
    working: httpx.AsyncClient, container: Container, clock: FakeClock
) -> None:
    alert_policy = {
        **POLICY,
        "name": "high-cpu",
        "condition": {"type": "alert", "alertname": "HighCPU"},
    }
    await create(working, alert_policy)
    url = "/api/v1/alerts/alertmanager"
    for instance, fingerprint in (("web-1:9100", "a1a1a1a1a1a1a1a1"), ("web-2:9100", "b2b2b2")):
        response = await working.post(
            url, json=notification(alert(clock, instance=instance, fingerprint=fingerprint))
        )
        assert response.status_code == 200, response.text
    resolved = alert(
        clock, status="resolved", instance="web-1:9100", fingerprint="a1a1a1a1a1a1a1a1"
    )
    assert (await working.post(url, json=notification(resolved))).status_code == 200
    by_alertmanager = await one(container, "episode_resolved")
    assert (by_alertmanager.policy_name, by_alertmanager.target) == ("high-cpu", "web-1")
    assert (by_alertmanager.severity, by_alertmanager.episode) == ("critical", 1)

    clock.advance(container.settings.alert_stale_seconds + 1)  # web-2's alert falls silent
    await container.runner.run_once()
    ended = [n for n in await recorded(container) if n.event == "episode_resolved"]
    assert [(n.target, n.episode) for n in ended] == [("web-1", 1), ("web-2", 1)]
