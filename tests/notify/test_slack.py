"""The Slack channel through slack-sdk against a local stand-in of Slack's Web API, which
checks the token and every Block Kit body."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.slack_standin import CHANNEL_ID, SIGNING_SECRET, TOKEN, SlackStandIn
from vigil.notify.channels.base import DeliveryFailed, Message, Thread, links
from vigil.notify.channels.slack import APPROVE, REJECT, SILENCE, ButtonValue, SlackChannel
from vigil.notify.config import SlackSpec
from vigil.notify.events import NotificationEvent
from vigil.notify.store import Notification

BASE = "https://vigil.example.com"
AT = datetime(2026, 1, 19, 12, 0, tzinfo=UTC)


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn()
    await standin.start()
    yield standin
    await standin.stop()
    assert standin.problems == []


@pytest.fixture
async def channel(slack: SlackStandIn) -> AsyncIterator[SlackChannel]:
    spec = SlackSpec(
        name="chat",
        type="slack",
        token="${SLACK_BOT_TOKEN}",
        channel="#ops",
        signing_secret="${SLACK_SIGNING_SECRET}",
        api_url=slack.api_url,
    ).model_copy(update={"token": TOKEN, "signing_secret": SIGNING_SECRET})
    made = SlackChannel(spec, timeout=5.0)
    yield made
    await made.aclose()


def note(
    notification_id: int,
    event: NotificationEvent = NotificationEvent.APPROVAL_WAITING,
    *,
    action_id: int | None = 7,
    reason: str = "cpu 97 > 90 for 30s: scale-up awaits approval",
    details: dict[str, Any] | None = None,
    policy: str | None = "cpu-hot",
    target: str | None = "web-01",
) -> Notification:
    return Notification(
        id=notification_id,
        at=AT,
        event=event.value,
        policy_name=policy,
        target=target,
        action_id=action_id,
        reason=reason,
        details=details if details is not None else {"action": "scale-up", "value": 97.0},
        severity="critical",
        tags={"team": "web"},
        episode=3,
        delivery_status="pending",
        attempts=0,
        next_attempt_at=None,
        last_error=None,
        delivered_at=None,
        deliveries=None,
    )


def message(*records: Notification, threads: dict[int, Thread] | None = None) -> Message:
    return Message(
        notifications=records,
        links={r.id: links(r, BASE) for r in records},
        threads=threads or {},
    )


def texts(blocks: list[dict[str, Any]]) -> str:
    """Every text of ``blocks``, one per line."""
    out: list[str] = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        out += [e["text"] for e in block.get("elements", []) if isinstance(e.get("text"), str)]
    return "\n".join(out)


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_an_approval_message_has_the_facts_the_reason_links_and_three_buttons(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    refs = await channel.send(message(note(1)))

    [call] = slack.called("chat.postMessage")
    [posted] = slack.top_level()
    assert refs == {1: {"channel": CHANNEL_ID, "ts": posted.ts}}
    assert call.args["channel"] == "#ops"
    assert call.args["text"] == "Approval waiting: cpu-hot on web-01"
    shown = texts(posted.blocks)
    assert posted.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Approval waiting: cpu-hot on web-01"},
    }
    for fact in ("*Policy*\ncpu-hot", "*Target*\nweb-01", "*Severity*\ncritical", "*Value*\n97"):
        assert fact in shown
    assert "cpu 97 &gt; 90 for 30s: scale-up awaits approval" in shown
    assert f"<{BASE}/api/v1/actions/7|Action 7>" in shown
    assert f"<{BASE}/api/v1/policies/cpu-hot|Policy cpu-hot>" in shown
    approve, reject, silence = buttons(posted.blocks)
    assert [b["action_id"] for b in (approve, reject, silence)] == [APPROVE, REJECT, SILENCE]
    assert [b["text"]["text"] for b in (approve, reject, silence)] == [
        "Approve",
        "Reject",
        "Silence 1h",
    ]
    assert ButtonValue.decode(approve["value"]) == ButtonValue(channel="chat", action=7)
    assert ButtonValue.decode(silence["value"]) == ButtonValue(
        channel="chat", action=7, policy="cpu-hot", target="web-01"
    )


async def test_a_long_reason_is_cut_with_a_link_to_the_rest(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    long_reason = "why " * 2000  # 8,000 characters
    error = "Traceback & <stack> " * 400
    await channel.send(
        message(
            note(1, NotificationEvent.ACTION_FAILED, reason=long_reason, details={"error": error})
        )
    )
    [posted] = slack.top_level()
    reason = posted.blocks[1]["text"]["text"]
    assert len(reason) <= 3000
    assert reason.startswith("why why")
    assert reason.endswith(f"… <{BASE}/api/v1/actions/7|(read the rest)>")
    [error_block] = [
        b for b in posted.blocks if b.get("text", {}).get("text", "").startswith("*Error:*")
    ]
    assert len(error_block["text"]["text"]) <= 3000
    assert "Traceback &amp; &lt;stack&gt;" in error_block["text"]["text"]
    assert error_block["text"]["text"].endswith("(read the rest)>")
    assert buttons(posted.blocks) == []  # only an approval can be acted on


async def test_links_without_an_external_url_are_shown_as_paths(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    record = note(1, NotificationEvent.BREAKER_OPENED)
    await channel.send(Message(notifications=(record,), links={1: links(record, None)}))
    [posted] = slack.top_level()
    assert "Action 7: `/api/v1/actions/7`" in texts(posted.blocks)


async def test_a_group_is_one_message_listing_each_event_and_approvals_keep_their_own(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    records = [
        note(1, NotificationEvent.ACTION_FAILED, action_id=1, target="web-01"),
        note(2, NotificationEvent.APPROVAL_WAITING, action_id=2, target="web-02"),
        note(3, NotificationEvent.BREAKER_OPENED, action_id=None, target=None),
    ]
    refs = await channel.send(message(*records))
    approval, group = slack.top_level()
    assert len(buttons(approval.blocks)) == 3
    assert "cpu-hot on web-02" in approval.text
    assert group.blocks[0]["text"]["text"] == "2 events"
    listed = texts(group.blocks)
    assert "*Action failed: cpu-hot on web-01*" in listed
    assert "*Circuit breaker opened: cpu-hot*" in listed
    assert buttons(group.blocks) == []
    assert refs[2] == {"channel": CHANNEL_ID, "ts": approval.ts}
    assert refs[1] == refs[3] == {"channel": CHANNEL_ID, "ts": group.ts, "group": True}


async def test_a_large_group_stays_within_fifty_blocks(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    records = [note(i, NotificationEvent.ACTION_FAILED, action_id=i) for i in range(1, 81)]
    await channel.send(message(*records))
    [group] = slack.top_level()
    assert len(group.blocks) == 50
    assert group.blocks[0]["text"]["text"] == "80 events"
    assert group.blocks[-1]["elements"][0]["text"].startswith("…and 32 more")


async def test_progress_goes_to_the_thread_and_updates_the_first_message(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    first = note(1)
    [ref] = (await channel.send(message(first))).values()
    completed = note(2, NotificationEvent.ACTION_COMPLETED, reason="scale-up on web-01 succeeded")

    refs = await channel.send(message(completed, threads={2: Thread(ref=ref, origin=first)}))

    assert refs == {}  # a reply: no new top-level message
    [reply] = slack.replies(ref["ts"])
    assert reply.text == "Action completed: cpu-hot on web-01"
    [call] = [c for c in slack.called("chat.postMessage") if c.args.get("thread_ts")]
    assert call.args["thread_ts"] == ref["ts"]
    assert "reply_broadcast" not in call.args  # only what needs a person is broadcast
    [original] = slack.top_level()
    assert original.updates == 1
    assert buttons(original.blocks) == []
    assert original.blocks[-1]["elements"][0]["text"] == (
        "*Action completed* at 2026-01-19 12:00:00 UTC: scale-up on web-01 succeeded"
    )
    failed = note(3, NotificationEvent.ACTION_FAILED, reason="exit 1")
    await channel.send(message(failed, threads={3: Thread(ref=ref, origin=first)}))
    last = slack.called("chat.postMessage")[-1]
    assert last.args["thread_ts"] == ref["ts"]
    assert last.args["reply_broadcast"] is True


async def test_a_refusal_says_what_slack_answered(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    spec = channel.spec.model_copy(update={"channel": "#nowhere"})
    elsewhere = SlackChannel(spec, timeout=5.0)
    try:
        with pytest.raises(DeliveryFailed, match=r"^answered 200: channel_not_found$"):
            await elsewhere.send(message(note(1)))
    finally:
        await elsewhere.aclose()

    slack.fail = (500, "<html><body>upstream " + "x" * 400 + "</body></html>", "text/html")
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(message(note(2)))
    assert str(caught.value) == "answered 500: " + ("<html><body>upstream " + "x" * 400)[:200]

    slack.fail = (429, json.dumps({"ok": False, "error": "ratelimited"}), "application/json")
    with pytest.raises(DeliveryFailed, match=r"^answered 429: ratelimited$"):
        await channel.send(message(note(3)))


async def test_a_slack_that_is_down_is_a_delivery_failure(slack: SlackStandIn) -> None:
    spec = SlackSpec(
        name="chat", type="slack", token="${T}", channel="#ops", api_url="http://127.0.0.1:9/api/"
    ).model_copy(update={"token": TOKEN})
    down = SlackChannel(spec, timeout=2.0)
    try:
        with pytest.raises(DeliveryFailed, match="Connect"):
            await down.send(message(note(1)))
    finally:
        await down.aclose()


async def test_the_token_is_never_logged(
    slack: SlackStandIn, channel: SlackChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await channel.send(message(note(1)))
    slack.fail = (500, "nope", "text/plain")
    with pytest.raises(DeliveryFailed):
        await channel.send(message(note(2)))
    assert "slack_sdk" in caplog.text  # its debug log ran, with the request's headers
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(channel.spec)


async def test_approvers_by_id_or_by_user_group(slack: SlackStandIn) -> None:
    slack.groups["S0ONCALL"] = ["U0BOB", "U0CAROL"]
    spec = SlackSpec(
        name="chat",
        type="slack",
        token="${T}",
        channel="#ops",
        api_url=slack.api_url,
        approvers=["U0ALICE"],
        approver_groups=["S0ONCALL"],
    ).model_copy(update={"token": TOKEN})
    channel = SlackChannel(spec, timeout=5.0)
    try:
        assert await channel.may_decide("U0ALICE")
        assert slack.called("usergroups.users.list") == []  # listed: no need to ask
        assert await channel.may_decide("U0BOB")
        assert not await channel.may_decide("U0MALLORY")
        assert await channel.may_decide("U0CAROL")
        [call] = slack.called("usergroups.users.list")  # asked once, then remembered
        assert call.args == {"usergroup": "S0ONCALL"}
    finally:
        await channel.aclose()


async def test_answers_go_only_to_slack_or_the_channels_own_api_host(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    assert channel.answers_at("https://hooks.slack.com/actions/T0/1/abc")
    assert channel.answers_at("https://hooks.slack-gov.com/actions/T0/1/abc")
    assert channel.answers_at(slack.response_url)  # the stand-in serves the api_url
    assert not channel.answers_at("http://hooks.slack.com/actions/T0/1/abc")
    assert not channel.answers_at("https://hooks.slack.com.evil.example/actions")
    assert not channel.answers_at("https://169.254.169.254/latest/meta-data")


async def test_a_post_failing_after_others_went_names_those_that_went(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    first = note(1)
    ref = await channel.send(message(first))
    slack.calls.clear()
    # A group: a reply in action 7's thread, an approval of action 8 (its own message), and
    # a failure of action 9; the third post is refused.
    reply = note(2, NotificationEvent.ACTION_COMPLETED, reason="done")
    approval = note(3, action_id=8, target="web-02")
    failure = note(4, NotificationEvent.ACTION_FAILED, action_id=9, reason="exit 1")
    slack.fail = (429, json.dumps({"ok": False, "error": "ratelimited"}), "application/json")
    slack.fail_after = 3  # the reply, the first message's update, the approval

    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(
            message(reply, approval, failure, threads={2: Thread(ref=ref[1], origin=first)})
        )

    assert str(caught.value) == "answered 429: ratelimited"
    [approval_posted] = [m for m in slack.top_level() if m.ts != ref[1]["ts"]]
    assert caught.value.taken == {
        2: {},
        3: {"channel": CHANNEL_ID, "ts": approval_posted.ts},
    }
    assert [c.method for c in slack.calls] == [
        "chat.postMessage",
        "chat.update",
        "chat.postMessage",
        "chat.postMessage",
    ]
    # What is retried is what did not go: one message, no second approval.
    slack.fail = None
    refs = await channel.send(message(failure))
    assert list(refs) == [4]
    assert len(slack.top_level()) == 3


async def test_without_a_signing_secret_an_approval_has_no_buttons_but_says_how_to_approve(
    slack: SlackStandIn, channel: SlackChannel
) -> None:
    spec = channel.spec.model_copy(update={"signing_secret": None})
    unsigned = SlackChannel(spec, timeout=5.0)
    try:
        await unsigned.send(message(note(1)))
        await unsigned.send(message(note(2, action_id=8), note(3, action_id=9)))
    finally:
        await unsigned.aclose()

    posted = slack.top_level()
    assert len(posted) == 3
    for shown, action in zip(posted, (7, 8, 9), strict=True):
        assert buttons(shown.blocks) == []
        assert shown.blocks[-1] == {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Approve or reject it through Vigil's API: `POST {BASE}/api/v1/"
                    f"actions/{action}/approve` or `POST {BASE}/api/v1/actions/{action}/reject`"
                    " (this channel has no signing_secret, so it shows no buttons).",
                }
            ],
        }
