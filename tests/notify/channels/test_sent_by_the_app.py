"""The channels as the app's own sender drives them, on SQLite and on PostgreSQL: a page
opened and resolved by one episode, and a mail server that refuses and then is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.notify.channels.conftest import stop_smtp
from tests.notify.far_side import Answer, FarSide
from vigil.actions.status import Status
from vigil.actions.store import transition
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.local import free_port
from vigil.notify import store
from vigil.notify.events import NotificationEvent
from vigil.observability.audit import Actor

REFUSAL = "4.3.0 mail queue full, " * 15


class Refusing:
    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        return "451 " + REFUSAL


class MailServer:
    """A local SMTP server refusing every mail with ``451`` and a long text."""

    def __init__(self) -> None:
        self.port = free_port()
        self.controller = Controller(Refusing(), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            stop_smtp(self.controller)


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    server = MailServer()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(
    tmp_path: Path,
    far_side: FarSide,
    mail_server: MailServer,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "r0ut1ng")
    path = tmp_path / "notifications.yaml"
    path.write_text(
        f"""
channels:
  - name: pager
    type: pagerduty
    routing_key: ${{PAGERDUTY_ROUTING_KEY}}
    url: {far_side.url}/v2/enqueue
  - name: mail
    type: email
    host: 127.0.0.1
    port: {mail_server.port}
    security: none
    from: vigil@example.com
    to: [oncall@example.com]
routes:
  - event: [escalation_exhausted, episode_resolved]
    channels: [pager]
  - event: [action_failed]
    channels: [mail]
"""
    )
    return {
        "notifications_file": path,
        "notify_timeout_seconds": 2.0,
        "notify_max_attempts": 2,
        "notify_retry_base_seconds": 1.0,
        "notify_interval_seconds": 0.05,
    }


async def until(container: Container, notification_id: int, done: Any) -> store.Notification:
    """The notification once ``done(row)`` holds, waiting on the sender's passes."""
    async with asyncio.timeout(15):
        while True:
            passes = container.notifier.passes
            async with container.database.read() as conn:
                row = await store.get_notification(conn, notification_id=notification_id)
            assert row is not None
            if done(row):
                return row
            await container.notifier.wait_for_passes(passes + 1)


async def record(container: Container, event: NotificationEvent, **fields: Any) -> int:
    async with container.database.write() as conn:
        return await store.record_notification(
            conn,
            now=container.clock.now(),
            event=event,
            policy_name="web-cpu-high",
            target="web-01",
            reason="the violation remains after every step",
            **fields,
        )


async def test_an_episode_opens_and_resolves_one_incident(
    client: httpx.AsyncClient, container: Container, far_side: FarSide
) -> None:
    far_side.answers = [Answer(202, b'{"status":"success"}')]
    exhausted = await record(
        container, NotificationEvent.ESCALATION_EXHAUSTED, episode=7, severity="critical"
    )
    row = await until(container, exhausted, lambda r: r.delivery_status == "delivered")
    assert row.deliveries is not None
    assert set(row.deliveries) == {"pager"}
    resolved = await record(container, NotificationEvent.EPISODE_RESOLVED, episode=7)
    await until(container, resolved, lambda r: r.delivery_status == "delivered")

    trigger, resolve = (orjson.loads(r.body) for r in far_side.requests)
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == "vigil/web-cpu-high/web-01/7"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["routing_key"] == resolve["routing_key"] == "r0ut1ng"


async def test_a_refusing_then_vanished_mail_server_ends_failed_with_its_answer(
    client: httpx.AsyncClient,
    container: Container,
    clock: FakeClock,
    mail_server: MailServer,
) -> None:
    failed = await record(container, NotificationEvent.ACTION_FAILED, action_id=42)
    row = await until(container, failed, lambda r: r.attempts == 1)
    assert row.delivery_status == "pending"
    assert row.last_error == "mail: answered 451: " + " ".join(REFUSAL.split())[:200]

    mail_server.stop()
    clock.advance(5)
    container.notifier.wake()
    row = await until(container, failed, lambda r: r.delivery_status == "failed")
    assert row.attempts == 2
    assert str(row.last_error).startswith("mail: SMTPConnectError")


async def test_an_exhausted_escalation_pages_once_and_its_episode_resolves_the_page(
    client: httpx.AsyncClient, container: Container, clock: FakeClock, far_side: FarSide
) -> None:
    far_side.answers = [Answer(202, b'{"status":"success"}')]
    policy = {
        "name": "web-cpu-high",
        "target": "web-*",
        "severity": "critical",
        "auto_remediate": True,
        "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
        "action": "scale-up",
        "cooldown_seconds": 0,
        "verify": {"within_seconds": 60},
        "escalate": ["restart-service"],
    }
    assert (await client.post("/api/v1/policies", json=policy)).status_code == 201

    async def ingest(value: float) -> dict[str, Any]:
        body = {"name": "cpu", "value": value, "target": "web-01"}
        response = await client.post("/api/v1/ingest", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def complete(action_id: int) -> None:
        async with container.database.write() as conn:
            for to in (Status.RUNNING, Status.COMPLETED):
                await transition(
                    conn,
                    action_id=action_id,
                    to=to,
                    now=clock.now(),
                    actor=Actor("worker"),
                    reason="ran",
                )

    [first] = (await ingest(95))["actions"]
    await complete(first["action_id"])
    clock.advance(61)
    await ingest(96)  # still hot when the window ends: escalate
    await container.runner.run_once()
    pair = (await client.get("/api/v1/policies/web-cpu-high/state")).json()["targets"][0]
    await complete(pair["action_id"])
    clock.advance(61)
    await container.runner.run_once()  # the last step did not help either

    listed = await client.get("/api/v1/notifications", params={"event": "escalation_exhausted"})
    [exhausted] = listed.json()["notifications"]
    await until(container, exhausted["id"], lambda r: r.delivery_status == "delivered")
    await ingest(40)  # the episode ends
    listed = await client.get("/api/v1/notifications", params={"event": "episode_resolved"})
    [resolved] = listed.json()["notifications"]
    assert resolved["episode"] == exhausted["episode"] is not None
    await until(container, resolved["id"], lambda r: r.delivery_status == "delivered")

    trigger, resolve = (orjson.loads(r.body) for r in far_side.requests)
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    key = f"vigil/web-cpu-high/web-01/{exhausted['episode']}"
    assert trigger["dedup_key"] == resolve["dedup_key"] == key
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "web-01"
