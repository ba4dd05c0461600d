"""Far sides that refuse, hang or are gone: every HTTP channel (webhook, Teams, PagerDuty,
Slack) retries, ends ``failed`` with the far side's answer, and nothing else in Vigil waits
for it. On SQLite and on PostgreSQL, through the whole app with its own sender running.
(Email's SMTP server refusing and vanishing is tested with the email channel.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.notify.far_side import Answer, FarSide
from vigil.clock import FakeClock
from vigil.container import Container
from vigil.notify import store
from vigil.notify.events import NotificationEvent

LONG_ANSWER = "quota exceeded; " * 40


CHANNELS = {
    "webhook": 'url: "{url}/hook/s3cret"',
    "teams": 'url: "{url}/workflows/s3cret"',
    "pagerduty": 'routing_key: ${{ROUTING_KEY}}\n    url: "{url}/v2/enqueue"',
    "slack": 'token: ${{SLACK_TOKEN}}\n    channel: "#ops"\n    api_url: "{url}/api/"',
}


@pytest.fixture(params=sorted(CHANNELS))
def kind(request: pytest.FixtureRequest) -> str:
    """The type of the one channel the far side stands in for."""
    return str(request.param)


@pytest.fixture
def settings_overrides(
    tmp_path: Path, far_side: FarSide, kind: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("ROUTING_KEY", "s3cret-key")
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-s3cret")
    far_side.answers = [Answer(500, LONG_ANSWER.encode())]
    settings = CHANNELS[kind].format(url=far_side.url)
    path = tmp_path / "notifications.yaml"
    path.write_text(
        f"""
channels:
  - name: far
    type: {kind}
    {settings}
routes:
  - channels: [far]
"""
    )
    return {
        "notifications_file": path,
        "notify_timeout_seconds": 2.0,
        "notify_max_attempts": 2,
        "notify_retry_base_seconds": 1.0,
        "notify_interval_seconds": 0.05,
    }


async def notification(container: Container, notification_id: int) -> store.Notification:
    async with container.database.read() as conn:
        row = await store.get_notification(conn, notification_id=notification_id)
    assert row is not None
    return row


async def until(container: Container, notification_id: int, done: Any) -> store.Notification:
    """The notification once ``done(row)`` holds, waiting on the sender's passes."""
    async with asyncio.timeout(15):
        while True:
            passes = container.notifier.passes
            row = await notification(container, notification_id)
            if done(row):
                return row
            await container.notifier.wait_for_passes(passes + 1)


async def record(container: Container) -> int:
    async with container.database.write() as conn:
        return await store.record_notification(
            conn,
            now=container.clock.now(),
            event=NotificationEvent.ACTION_FAILED,
            policy_name="web-cpu-high",
            target="web-01",
            reason="scale-up failed",
        )


async def test_a_refusing_then_vanished_far_side_ends_failed_with_its_answer(
    client: httpx.AsyncClient, container: Container, clock: FakeClock, far_side: FarSide
) -> None:
    notification_id = await record(container)
    row = await until(container, notification_id, lambda r: r.attempts == 1)
    assert row.delivery_status == "pending"
    answer = " ".join(LONG_ANSWER.split())[:200]
    assert row.last_error == f"far: answered 500: {answer}"
    assert "s3cret" not in str(row.deliveries)

    far_side.stop()
    clock.advance(5)
    container.notifier.wake()
    row = await until(container, notification_id, lambda r: r.delivery_status == "failed")
    assert row.attempts == 2
    assert str(row.last_error).startswith("far: ")
    assert "s3cret" not in str(row.last_error)
    assert "connect" in str(row.last_error).lower()
    listed = (await client.get("/api/v1/notifications", params={"delivery": "failed"})).json()
    assert [n["id"] for n in listed["notifications"]] == [notification_id]


async def test_a_far_side_that_hangs_holds_up_nothing_else(
    client: httpx.AsyncClient, container: Container, far_side: FarSide, kind: str
) -> None:
    far_side.hang = True
    notification_id = await record(container)
    assert await asyncio.to_thread(far_side.asked.wait, 10), "the sender never asked"
    # The sender is waiting for an answer that does not come; the API is not.
    for value in range(20):
        response = await client.post(
            "/api/v1/ingest", json={"name": "cpu", "value": value, "target": "web-01"}
        )
        assert response.status_code in (200, 201, 202), response.text
    assert (await notification(container, notification_id)).attempts == 0
    row = await until(container, notification_id, lambda r: r.attempts == 1)
    assert row.last_error == "far: timed out after 2s"
