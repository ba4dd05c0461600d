"""Slack's buttons, end to end in-process: a policy that needs approval fires, the sender
posts the approval message to a local stand-in of Slack's Web API, and clicks on its buttons
come back as signed interactivity requests, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.api.support import audit_rows, table_counts
from tests.slack_standin import (
    SIGNING_SECRET,
    TOKEN,
    Posted,
    SlackStandIn,
    click,
    sign,
)
from vigil.access.keys import create_key
from vigil.access.roles import Role
from vigil.actions import store as actions_store
from vigil.api.app import create_app
from vigil.clock import FakeClock
from vigil.container import Container, build_container
from vigil.notify.channels.slack import APPROVE, REJECT, SILENCE
from vigil.observability.audit import Actor, verify_chain
from vigil.settings import Settings

PATH = "/api/v1/integrations/slack/interactions"
APPROVER, OUTSIDER, ON_CALL = "U0APPROVER", "U0OUTSIDER", "U0ONCALL"
POLICY: dict[str, Any] = {
    "name": "cpu-hot",
    "target": "web-*",
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
    "action": "scale-up",
    "cooldown_seconds": 0,
    "approval_required": True,
}
REMEDIATIONS = """\
remediations:
  - action: scale-up
    targets: "web-broken-*"
    plugin: command
    with: {argv: ["false"]}
    retries: {max_attempts: 1}
  - action: scale-up
    plugin: log
"""


def notifications_file(api_url: str) -> str:
    return f"""\
channels:
  - name: chat
    type: slack
    token: ${{SLACK_BOT_TOKEN}}
    channel: "#ops"
    signing_secret: ${{SLACK_SIGNING_SECRET}}
    approvers: [{APPROVER}]
    approver_groups: [S0ONCALL]
    api_url: {api_url}
routes:
  - event: [approval_waiting, action_completed, action_failed]
    channels: [chat]
"""


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn(groups={"S0ONCALL": [ON_CALL]})
    await standin.start()
    yield standin
    await standin.stop()
    assert standin.problems == []


@pytest.fixture
def settings_overrides(
    slack: SlackStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    path = tmp_path / "notifications.yaml"
    path.write_text(notifications_file(slack.api_url))
    remediations = tmp_path / "remediations.yaml"
    remediations.write_text(REMEDIATIONS)
    return {
        "notifications_file": path,
        "remediations_file": remediations,
        "external_url": "https://vigil.example.com",
        "notify_interval_seconds": 0.2,
    }


@pytest.fixture
def slack_client(app: FastAPI) -> httpx.AsyncClient:
    """A client that sends what Slack sends: a signed form, no API key, no custom header."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vigil.test")


@dataclass
class Clicks:
    """Vigil as Slack's buttons see it: the API (``client``, with an operator's header),
    Slack's signed requests (``slack_client``) and the stand-in of Slack's Web API."""

    client: httpx.AsyncClient
    slack_client: httpx.AsyncClient
    slack: SlackStandIn
    clock: FakeClock
    container: Container

    async def waiting_approval(self, target: str = "web-01") -> tuple[int, Posted]:
        """A policy needing approval fires on ``target``; the action waiting and its message
        in Slack."""
        response = await self.client.post("/api/v1/policies", json=POLICY)
        assert response.status_code == 201, response.text
        ingested = await self.client.post(
            "/api/v1/ingest", json={"name": "cpu", "value": 97, "target": target}
        )
        assert ingested.status_code == 201, ingested.text
        [action] = ingested.json()["actions"]
        assert action["status"] == "awaiting_approval"
        [posted] = await self.slack.wait_for(self.slack.top_level)
        return int(action["action_id"]), posted

    async def press(
        self,
        posted: Posted,
        button: str,
        *,
        user: str = APPROVER,
        username: str = "alice",
        secret: str = SIGNING_SECRET,
        age: float = 0.0,
    ) -> httpx.Response:
        body = click(
            posted, button, user=user, username=username, response_url=self.slack.response_url
        )
        headers = sign(body, secret=secret, at=self.clock.now().timestamp() - age)
        return await self.slack_client.post(PATH, content=body, headers=headers)

    async def post_signed(self, body: str) -> httpx.Response:
        """``body`` as Slack would send it now, signed."""
        headers = sign(body, at=self.clock.now().timestamp())
        return await self.slack_client.post(PATH, content=body, headers=headers)

    async def action(self, action_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/actions/{action_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def history(self, action_id: int) -> list[dict[str, Any]]:
        response = await self.client.get(f"/api/v1/actions/{action_id}/history")
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows

    async def silences(self) -> list[dict[str, Any]]:
        silences: list[dict[str, Any]] = (await self.client.get("/api/v1/silences")).json()[
            "silences"
        ]
        return silences

    async def counts(self) -> dict[str, int]:
        return await table_counts(self.container)

    async def audited(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in await audit_rows(self.container) if r["kind"] == kind]

    async def assert_nothing_changed(self, action_id: int, before: dict[str, int]) -> None:
        """The action still waits for its answer and no table has a row more or less."""
        assert (await self.action(action_id))["status"] == "awaiting_approval"
        assert await self.counts() == before


@pytest.fixture
def clicks(
    client: httpx.AsyncClient,
    slack_client: httpx.AsyncClient,
    slack: SlackStandIn,
    clock: FakeClock,
    container: Container,
) -> Clicks:
    return Clicks(client, slack_client, slack, clock, container)


def line_under(posted: Posted) -> str:
    text: str = posted.blocks[-1]["elements"][0]["text"]
    return text


def has_buttons(posted: Posted) -> bool:
    return any(block["type"] == "actions" for block in posted.blocks)


async def test_an_approver_clicks_approve_and_the_action_runs_as_through_the_api(
    clicks: Clicks,
) -> None:
    action_id, posted = await clicks.waiting_approval()

    response = await clicks.press(posted, APPROVE)

    assert response.status_code == 200, response.text
    action = await clicks.action(action_id)
    assert action["status"] == "pending"
    assert await clicks.container.queue.depth() == 1  # dispatched
    [_created, approved] = await clicks.history(action_id)
    assert (approved["from"], approved["to"]) == ("awaiting_approval", "pending")
    assert approved["actor"] == "slack:U0APPROVER (alice)"
    assert approved["reason"] == "approved by slack:U0APPROVER (alice)"
    [audit] = await clicks.audited("action.pending")
    assert audit["actor"] == "slack:U0APPROVER (alice)"
    assert audit["subject"] == f"action:{action_id}"
    async with clicks.container.database.read() as conn:
        checked, broken = await verify_chain(conn)
    assert broken is None
    assert checked == len(await audit_rows(clicks.container))
    # The message shows the decision, its buttons gone; the thread says it too.
    assert posted.updates == 1
    assert not has_buttons(posted)
    assert line_under(posted).startswith(f"Approved by <@{APPROVER}> at 2026-01-19 12:00:00 UTC")
    [reply] = clicks.slack.replies(posted.ts)
    assert reply.text.startswith(f"Approved by <@{APPROVER}>")


async def test_a_user_group_member_may_approve(clicks: Clicks) -> None:
    action_id, posted = await clicks.waiting_approval()

    response = await clicks.press(posted, APPROVE, user=ON_CALL, username="bob")

    assert response.status_code == 200, response.text
    assert (await clicks.action(action_id))["status"] == "pending"
    [lookup] = clicks.slack.called("usergroups.users.list")
    assert lookup.args == {"usergroup": "S0ONCALL"}
    assert (await clicks.history(action_id))[-1]["actor"] == "slack:U0ONCALL (bob)"


async def test_someone_not_listed_is_told_so_and_nothing_changes(clicks: Clicks) -> None:
    action_id, posted = await clicks.waiting_approval()
    before = await clicks.counts()

    for button in (APPROVE, REJECT, SILENCE):
        response = await clicks.press(posted, button, user=OUTSIDER, username="mallory")
        assert response.status_code == 200, response.text

    assert len(clicks.slack.responses) == 3
    for answer in clicks.slack.responses:
        assert answer["response_type"] == "ephemeral"
        assert answer["replace_original"] is False
        assert "not allowed" in answer["text"]
    await clicks.assert_nothing_changed(action_id, before)
    assert await clicks.silences() == []
    assert posted.updates == 0
    assert has_buttons(posted)


async def test_when_the_approver_groups_cannot_be_read_nothing_changes(clicks: Clicks) -> None:
    action_id, posted = await clicks.waiting_approval()
    before = await clicks.counts()
    clicks.slack.fail = (200, '{"ok": false, "error": "missing_scope"}', "application/json")

    response = await clicks.press(posted, APPROVE, user=ON_CALL)

    assert response.status_code == 200, response.text
    [answer] = clicks.slack.responses
    assert "could not read the approver groups" in answer["text"]
    assert "missing_scope" in answer["text"]
    await clicks.assert_nothing_changed(action_id, before)


@pytest.mark.parametrize(
    ("secret", "age", "why"),
    [
        ("not-the-secret", 0.0, "signature does not match"),
        (SIGNING_SECRET, 301.0, "older than 5 minutes"),
        (SIGNING_SECRET, -301.0, "older than 5 minutes"),
    ],
    ids=["bad-signature", "stale", "from-the-future"],
)
async def test_an_unsigned_or_stale_click_is_401_and_changes_nothing(
    clicks: Clicks, secret: str, age: float, why: str
) -> None:
    action_id, posted = await clicks.waiting_approval()
    before = await clicks.counts()

    response = await clicks.press(posted, APPROVE, secret=secret, age=age)

    assert response.status_code == 401, response.text
    assert why in response.json()["detail"]
    unsigned = await clicks.slack_client.post(
        PATH,
        content=click(posted, APPROVE, response_url=clicks.slack.response_url),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 401
    assert "not signed" in unsigned.json()["detail"]
    await clicks.assert_nothing_changed(action_id, before)
    assert clicks.slack.responses == []
    assert posted.updates == 0


async def test_a_second_click_says_what_happened_and_acts_no_more(clicks: Clicks) -> None:
    action_id, posted = await clicks.waiting_approval()
    original_blocks = list(posted.blocks)
    assert (await clicks.press(posted, APPROVE)).status_code == 200
    clicks.clock.advance(5)
    before = await clicks.counts()

    # A second click, on the message as it was before the update reached every screen.
    stale = Posted(posted.channel, posted.ts, posted.text, original_blocks)
    again = await clicks.press(stale, REJECT, username="alice")

    assert again.status_code == 200
    [answer] = clicks.slack.responses
    assert answer["text"].startswith(
        "Already approved by slack:U0APPROVER (alice) at 2026-01-19 12:00:00 UTC"
    )
    assert "the action is pending now" in answer["text"]
    assert (await clicks.action(action_id))["status"] == "pending"
    assert [h["to"] for h in await clicks.history(action_id)] == ["awaiting_approval", "pending"]
    assert await clicks.counts() == before


async def test_approve_after_the_approval_timed_out_says_so_and_changes_nothing(
    clicks: Clicks,
) -> None:
    action_id, posted = await clicks.waiting_approval()
    clicks.clock.advance(2 * 86400)
    before = await clicks.counts()

    assert (await clicks.press(posted, APPROVE)).status_code == 200

    [answer] = clicks.slack.responses
    assert "approval timed out" in answer["text"]
    assert answer["text"].endswith("Nothing was changed.")
    await clicks.assert_nothing_changed(action_id, before)


async def test_reject_cancels_the_action(clicks: Clicks) -> None:
    action_id, posted = await clicks.waiting_approval()

    assert (await clicks.press(posted, REJECT)).status_code == 200

    assert (await clicks.action(action_id))["status"] == "cancelled"
    assert await clicks.container.queue.depth() == 0
    last = (await clicks.history(action_id))[-1]
    assert (last["to"], last["actor"]) == ("cancelled", "slack:U0APPROVER (alice)")
    assert last["reason"] == "rejected by slack:U0APPROVER (alice)"
    assert not has_buttons(posted)
    assert line_under(posted).startswith(f"Rejected by <@{APPROVER}>")
    assert line_under(posted).endswith("it is cancelled.")


async def test_silence_1h_silences_the_policy_on_the_target(clicks: Clicks) -> None:
    action_id, posted = await clicks.waiting_approval()

    assert (await clicks.press(posted, SILENCE)).status_code == 200

    [silence] = await clicks.silences()
    assert silence["matchers"] == {"policy": "cpu-hot", "target": "web-01"}
    assert silence["active"] is True
    assert silence["created_by"] == "slack:U0APPROVER (alice)"
    assert silence["ends_at"] == (clicks.clock.now() + timedelta(hours=1)).isoformat().replace(
        "+00:00", "Z"
    )
    assert "from Slack by slack:U0APPROVER (alice)" in silence["comment"]
    [audit] = await clicks.audited("silence.created")
    assert audit["actor"] == "slack:U0APPROVER (alice)"
    # The action still waits for its answer, buttons and all; the thread says who silenced.
    assert (await clicks.action(action_id))["status"] == "awaiting_approval"
    assert has_buttons(posted)
    [reply] = clicks.slack.replies(posted.ts)
    assert reply.text.startswith(f"<@{APPROVER}> silenced cpu-hot on web-01 until")


async def test_a_replayed_silence_click_makes_no_second_silence(clicks: Clicks) -> None:
    slack, clock = clicks.slack, clicks.clock
    _, posted = await clicks.waiting_approval()
    body = click(posted, SILENCE, user=APPROVER, username="alice", response_url=slack.response_url)
    headers = sign(body, at=clock.now().timestamp())

    assert (await clicks.slack_client.post(PATH, content=body, headers=headers)).status_code == 200
    # The very request again; then the same click (its trigger_id) signed a minute later.
    assert (await clicks.slack_client.post(PATH, content=body, headers=headers)).status_code == 200
    clock.advance(60)
    assert (await clicks.post_signed(body)).status_code == 200

    [silence] = await clicks.silences()
    assert silence["created_by"] == "slack:U0APPROVER (alice)"
    audit = await clicks.audited("silence.created")
    assert len(audit) == 1
    await slack.wait_for(lambda: len(slack.responses) == 2)
    assert [r["text"] for r in slack.responses] == [
        "This click was already taken: its silence stands. Nothing was changed."
    ] * 2
    # A click of its own (another trigger_id, another second) silences again.
    clock.advance(1)
    assert (await clicks.press(posted, SILENCE)).status_code == 200
    assert len(await clicks.silences()) == 2


async def test_a_button_value_nested_too_deep_is_400(clicks: Clicks) -> None:
    await clicks.waiting_approval()
    before = await clicks.counts()
    payload = {
        "type": "block_actions",
        "user": {"id": APPROVER},
        "actions": [{"action_id": APPROVE, "value": "[" * 100_000}],
    }

    response = await clicks.post_signed(urlencode({"payload": json.dumps(payload)}))

    assert response.status_code == 400, response.text
    assert await clicks.counts() == before


async def test_a_click_needs_no_api_key_while_every_other_route_does(clicks: Clicks) -> None:
    container = clicks.container
    action_id, posted = await clicks.waiting_approval()
    async with container.database.write() as conn:
        await create_key(conn, name="admin", role=Role.ADMIN, now=clicks.clock.now(), actor=Actor())
    container.keys.forget()
    assert (await clicks.client.get("/api/v1/actions")).status_code == 401

    response = await clicks.press(posted, APPROVE)

    assert response.status_code == 200, response.text
    assert posted.updates == 1
    assert not has_buttons(posted)
    async with container.database.read() as conn:
        [*_, approved] = await actions_store.history(conn, action_id=action_id)
    assert (approved.to_status, approved.actor) == ("pending", "slack:U0APPROVER (alice)")


async def test_what_is_not_a_click_of_vigils_buttons_is_refused_or_left_alone(
    clicks: Clicks,
) -> None:
    await clicks.waiting_approval()
    before = await clicks.counts()
    for body, status in (
        ("payload=not-json", 400),
        ("nothing=here", 400),
        ('payload={"type":"view_submission"}', 200),
        ('payload={"type":"block_actions","actions":[{"action_id":"other"}]}', 200),
        (
            'payload={"type":"block_actions","user":{"id":"U0APPROVER"},'
            '"actions":[{"action_id":"vigil.approve","value":"{\\"channel\\":\\"other\\",'
            '\\"action\\":1}"}]}',
            400,
        ),
    ):
        response = await clicks.post_signed(body)
        assert response.status_code == status, (body, response.text)
    at = clicks.clock.now().timestamp()
    garbled = {k.encode(): v.encode() for k, v in sign("payload=x", at=at).items()}
    garbled[b"X-Slack-Signature"] = b"v0=\xe9t\xe9"  # not ASCII: no signature of Slack's
    response = await clicks.slack_client.post(PATH, content="payload=x", headers=garbled)
    assert response.status_code == 401
    assert await clicks.counts() == before


# -- the whole loop, with a worker --------------------------------------------------------------


@pytest.fixture
async def working(settings: Settings, clock: FakeClock) -> AsyncIterator[tuple[FastAPI, Container]]:
    """An app that runs its in-process worker (and the sender)."""
    container = build_container(settings, clock=clock)
    application = create_app(settings, container, run_runner=False, run_worker=True)
    async with LifespanManager(application):
        yield application, container


@pytest.mark.parametrize(
    ("target", "status", "told", "broadcast"),
    [
        ("web-01", "completed", "Action completed", False),
        # Its remediation fails: a failure needs a person, so the reply shows in #ops too.
        ("web-broken-01", "failed", "Action failed", True),
    ],
    ids=["completed", "failed"],
)
async def test_approve_in_slack_runs_the_action_and_its_thread_tells_the_outcome(
    working: tuple[FastAPI, Container],
    slack: SlackStandIn,
    clock: FakeClock,
    target: str,
    status: str,
    told: str,
    broadcast: bool,
) -> None:
    app, container = working
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(
            transport=transport, base_url="http://vigil.test", headers={"X-Vigil-Request": "1"}
        ) as client,
        httpx.AsyncClient(transport=transport, base_url="http://vigil.test") as slack_client,
    ):
        clicks = Clicks(client, slack_client, slack, clock, container)
        action_id, posted = await clicks.waiting_approval(target=target)
        assert has_buttons(posted)

        response = await clicks.press(posted, APPROVE)
        assert response.status_code == 200, response.text

        # The worker runs it; the sender tells the thread and updates the first message.
        [reply] = await slack.wait_for(
            lambda: [r for r in slack.replies(posted.ts) if r.text.startswith(told)]
        )
        assert reply.thread_ts == posted.ts
        assert (await clicks.action(action_id))["status"] == status
        await slack.wait_for(lambda: f"*{told}* at" in line_under(posted))
        assert not has_buttons(posted)
        assert posted.updates == 2  # the decision, then the outcome
        [top] = slack.top_level()  # nothing else at the top level
        assert top.ts == posted.ts
        [post] = [c for c in slack.called("chat.postMessage") if c.args.get("thread_ts")][-1:]
        assert post.args["thread_ts"] == posted.ts
        assert post.args.get("reply_broadcast", False) is broadcast
        await container.notifier.wait_for_passes(container.notifier.passes + 1)
        listed = await client.get("/api/v1/notifications", params={"event": f"action_{status}"})
        [note] = listed.json()["notifications"]
        assert note["delivery"]["status"] == "delivered"
        [chat] = note["delivery"]["channels"]
        assert (chat["channel"], chat["type"]) == ("chat", "slack")
        audit = await client.get("/api/v1/audit", params={"actor": "slack:U0APPROVER (alice)"})
        assert [e["kind"] for e in audit.json()["entries"]] == ["action.pending"]
