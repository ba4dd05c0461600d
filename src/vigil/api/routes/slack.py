"""Slack's interactivity requests: the Approve, Reject and Silence 1h buttons of an
``approval_waiting`` message (see :mod:`vigil.notify.channels.slack`).

The request carries no API key: it is Slack's, signed with the app's signing secret
(``X-Slack-Signature`` over ``X-Slack-Request-Timestamp`` and the body). The signature is
checked, against the ``signing_secret`` of each configured ``slack`` channel, before the body
is read; an unsigned, wrongly signed or stale (older than 5 minutes) request gets 401 and
changes nothing.

A click is acted on only for a Slack user the channel lists in ``approvers``, or a member of
one of its ``approver_groups``; anyone else is told so (an ephemeral reply only they see)
and nothing changes. Approve and Reject are the very transition of ``POST
/api/v1/actions/{id}/approve`` and ``/reject``, and Silence 1h the silence of ``POST
/api/v1/silences``, audited with the actor ``slack:<user id> (<user name>)``. A click on an
action already decided says who decided it and when, and acts no more; a Silence 1h click
seen again (the same user, action and ``X-Slack-Request-Timestamp`` or ``trigger_id``, within
the 5 minutes its signature is accepted) makes no second silence.

Slack wants an answer within 3 seconds: the decision is made (and committed) before the
answer, and what is only shown in Slack -- the message updated without its buttons, a reply
in its thread, the ephemeral answer -- is sent after it, best effort.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, Request
from slack_sdk.signature import Clock as SlackClock
from slack_sdk.signature import SignatureVerifier
from starlette.responses import Response

from vigil.actions import store as actions_store
from vigil.actions.status import Status
from vigil.api.deps import ContainerDep, VigilRoute
from vigil.clock import Clock
from vigil.container import Container
from vigil.decide.silences import add_silence
from vigil.errors import Conflict, NotFound
from vigil.http.errors import ErrorOut, error_response
from vigil.notify.channels.base import DeliveryFailed
from vigil.notify.channels.slack import (
    APPROVE,
    BUTTONS,
    REJECT,
    SILENCE,
    SILENCE_SECONDS,
    ButtonValue,
    SlackChannel,
    decided,
)
from vigil.observability.audit import Actor
from vigil.observability.logging import get_logger

log = get_logger(__name__)

PATH = "/api/v1/integrations/slack/interactions"
MAX_AGE_SECONDS = 300
"""How old a signed request may be (Slack's own advice, and SignatureVerifier's check)."""

router = APIRouter(
    prefix="/api/v1/integrations/slack", tags=["integrations"], route_class=VigilRoute
)

_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>&]")

_FORM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["payload"],
                    "properties": {
                        "payload": {
                            "type": "string",
                            "description": "Slack's interaction payload, as JSON "
                            "(a `block_actions` one for a button)",
                        }
                    },
                }
            }
        },
    },
}


class _Clock(SlackClock):
    """Vigil's clock as slack-sdk's signature check asks it."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now().timestamp()


def _slack_channels(container: Container) -> list[SlackChannel]:
    return [
        channel
        for channel in container.notifier.channels.values()
        if isinstance(channel, SlackChannel) and channel.spec.signing_secret
    ]


def _signed_by(
    channels: list[SlackChannel],
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    clock: Clock,
) -> tuple[list[SlackChannel], str | None]:
    """The channels whose signing secret signed ``body``; else why none did."""
    if not timestamp or not signature:
        return [], "the request is not signed (X-Slack-Signature, X-Slack-Request-Timestamp)"
    if not signature.isascii() or len(signature) > 100:
        return [], "the signature does not match any slack channel's signing_secret"
    try:
        sent = int(timestamp)
    except ValueError:
        return [], "X-Slack-Request-Timestamp is not a Unix time"
    if abs(clock.now().timestamp() - sent) > MAX_AGE_SECONDS:
        return [], "the request is older than 5 minutes (X-Slack-Request-Timestamp)"
    signed = [
        channel
        for channel in channels
        if SignatureVerifier(str(channel.spec.signing_secret), _Clock(clock)).is_valid(
            body, timestamp, signature
        )
    ]
    if not signed:
        return [], "the signature does not match any slack channel's signing_secret"
    return signed, None


def _payload(body: bytes) -> dict[str, Any] | None:
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=10)
        [text] = form["payload"]
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, KeyError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _text(value: object, limit: int = 80) -> str:
    return _UNSAFE.sub("", value)[:limit] if isinstance(value, str) else ""


def _get(data: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


@router.post(
    "/interactions",
    status_code=200,
    response_class=Response,
    responses={
        200: {"description": "Taken (what it did is shown in Slack)"},
        400: {"model": ErrorOut, "description": "Signed, but not an interaction Vigil made"},
        401: {
            "model": ErrorOut,
            "description": "Not signed with a slack channel's signing_secret, or older than"
            " 5 minutes (or no slack channel has a signing_secret)",
        },
        413: {"model": ErrorOut, "description": "Body above the configured limit"},
        503: {"model": ErrorOut, "description": "The database is unavailable"},
    },
    openapi_extra=_FORM_BODY,
)
async def interactions(
    request: Request, container: ContainerDep, background: BackgroundTasks
) -> Response:
    """A click on a button of a Slack message (Slack's interactivity request URL). Needs no
    API key: Slack's signature is the proof (`X-Slack-Signature`: `v0=` and the HMAC-SHA256
    of `v0:<X-Slack-Request-Timestamp>:<body>` with the channel's signing secret; a timestamp
    more than 5 minutes away is refused)."""
    channels = _slack_channels(container)
    if not channels:
        return error_response(
            "no slack channel with a signing_secret is configured (VIGIL_NOTIFICATIONS_FILE):"
            " no request can be verified",
            401,
        )
    body = await request.body()
    signed, why = _signed_by(
        channels,
        body,
        request.headers.get("x-slack-request-timestamp"),
        request.headers.get("x-slack-signature"),
        container.clock,
    )
    if why is not None:
        return error_response(why, 401)
    payload = _payload(body)
    if payload is None:
        return error_response("the body must be a form with a JSON 'payload'", 400)
    if payload.get("type") != "block_actions":
        return Response(status_code=200)  # nothing Vigil asked for: taken, and left alone
    clicks = payload.get("actions")
    click = next(
        (
            c
            for c in (clicks if isinstance(clicks, list) else [])
            if isinstance(c, Mapping) and c.get("action_id") in BUTTONS
        ),
        None,
    )
    if click is None:
        return Response(status_code=200)
    value = ButtonValue.decode(click.get("value"))
    channel = next((c for c in signed if value is not None and c.name == value.channel), None)
    if value is None or channel is None:
        return error_response(
            "the button is not one of a slack channel whose signing_secret signed this request",
            400,
        )
    user = _text(_get(payload, "user", "id"), 32)
    if not user:
        return error_response("the payload names no user", 400)
    name = _text(_get(payload, "user", "username")) or _text(_get(payload, "user", "name"))
    button = str(click["action_id"])
    seen = (user, button, str(value.action))
    trigger = _text(payload.get("trigger_id"), 100)
    replay = [
        (*seen, "timestamp", str(request.headers.get("x-slack-request-timestamp"))),
        *([(*seen, "trigger_id", trigger)] if trigger else []),
    ]
    pressed = _Click(
        container=container,
        channel=channel,
        background=background,
        value=value,
        user=user,
        actor=Actor(f"slack:{user}" + (f" ({name})" if name else ""), request.state.request_id),
        response_url=_response_url(payload, channel),
        message=_message(payload),
        replay=replay,
    )
    await pressed.run(button)
    return Response(status_code=200)


def _response_url(payload: Mapping[str, Any], channel: SlackChannel) -> str | None:
    url = payload.get("response_url")
    if isinstance(url, str) and channel.answers_at(url):
        return url
    return None


def _message(payload: Mapping[str, Any]) -> tuple[dict[str, str], list[Any]] | None:
    """The clicked message's ref (channel, ts) and its blocks, when the payload has them."""
    channel = _get(payload, "container", "channel_id") or _get(payload, "channel", "id")
    ts = _get(payload, "container", "message_ts") or _get(payload, "message", "ts")
    blocks = _get(payload, "message", "blocks")
    if not isinstance(channel, str) or not isinstance(ts, str) or not isinstance(blocks, list):
        return None
    return {"channel": channel, "ts": ts}, [b for b in blocks if isinstance(b, dict)]


class _Click:
    """One click of a button, by one Slack user."""

    def __init__(
        self,
        *,
        container: Container,
        channel: SlackChannel,
        background: BackgroundTasks,
        value: ButtonValue,
        user: str,
        actor: Actor,
        response_url: str | None,
        message: tuple[dict[str, str], list[Any]] | None,
        replay: Sequence[tuple[str, ...]] = (),
    ) -> None:
        self.container = container
        self.replay = replay
        self.channel = channel
        self.background = background
        self.value = value
        self.user = user
        self.actor = actor
        self.response_url = response_url
        self.message = message

    async def run(self, button: str) -> None:
        try:
            allowed = await self.channel.may_decide(self.user)
        except DeliveryFailed as exc:
            log.warning("slack.approvers_unknown", channel=self.channel.name, error=str(exc))
            self.answer(f"Vigil could not read the approver groups from Slack ({exc}); try again.")
            return
        if not allowed:
            log.info("slack.click_refused", channel=self.channel.name, user=self.user)
            self.answer(
                "You are not allowed to approve, reject or silence from here: only the"
                f" approvers of Vigil's {self.channel.name!r} channel are. Nothing was changed."
            )
            return
        if button == SILENCE:
            await self.silence()
        elif button in (APPROVE, REJECT):
            await self.decide(approve=button == APPROVE)

    async def decide(self, *, approve: bool) -> None:
        actions = self.container.actions
        action_id = self.value.action
        decide = actions.approve if approve else actions.reject
        try:
            record = await decide(action_id, comment=None, actor=self.actor)
        except NotFound:
            self.answer(f"Action {action_id} does not exist (any more). Nothing was changed.")
            return
        except Conflict as exc:
            line = await self.what_happened(action_id)
            self.answer(line or f"{exc.message}. Nothing was changed.")
            if line:
                self.show(line, reply=False)
            return
        verb = "Approved" if approve else "Rejected"
        log.info(
            "slack.decided",
            channel=self.channel.name,
            action_id=action_id,
            decision=verb.lower(),
            actor=self.actor.name,
        )
        then = "it runs now" if record.status == Status.PENDING else "it is cancelled"
        line = f"{verb} by <@{self.user}> at {_when(record.updated_at)}: {then}."
        self.show(line, reply=True)

    async def what_happened(self, action_id: int) -> str | None:
        """Who answered the approval of ``action_id``, when, and where it is now."""
        async with self.container.database.read() as conn:
            record = await actions_store.get_action(conn, action_id=action_id)
            rows = await actions_store.history(conn, action_id=action_id)
        answered = next((r for r in rows if r.from_status == Status.AWAITING_APPROVAL.value), None)
        if answered is None:
            return None
        if answered.to_status == Status.PENDING.value:
            verb = "approved"
        elif answered.actor == "system":
            verb = "cancelled (its approval timed out)"
        else:
            verb = "rejected" if (answered.reason or "").startswith("rejected") else "cancelled"
        by = "" if answered.actor == "system" else f" by {answered.actor}"
        return (
            f"Already {verb}{by} at {_when(answered.at)}; the action is {record.status} now."
            " Nothing was changed."
        )

    async def silence(self) -> None:
        value = self.value
        matchers = {k: v for k, v in (("policy", value.policy), ("target", value.target)) if v}
        if not matchers:
            self.answer("This action names no policy or target to silence. Nothing was changed.")
            return
        now = self.container.clock.now()
        if not self.channel.first_click(self.replay, now.timestamp()):
            # The same click again (a replayed request, or Slack's own retry): one silence.
            log.info("slack.click_replayed", channel=self.channel.name, user=self.user)
            self.answer("This click was already taken: its silence stands. Nothing was changed.")
            return
        try:
            record = await add_silence(
                self.container.database,
                matchers=matchers,
                starts_at=None,
                ends_at=now + timedelta(seconds=SILENCE_SECONDS),
                comment=f"silenced for 1h from Slack by {self.actor.name} (action {value.action})",
                actor=self.actor,
                now=now,
            )
        except BaseException:
            self.channel.forget_click(self.replay)  # nothing was silenced: it may come again
            raise
        about = " on ".join(matchers.values())
        self.show(
            f"<@{self.user}> silenced {about} until {_when(record.ends_at)} (silence"
            f" {record.id}). The action still waits for an answer.",
            reply=True,
            update=False,
        )

    # -- what is only shown in Slack, after the answer ------------------------------------

    def answer(self, text: str) -> None:
        """An ephemeral reply to the user who clicked."""
        if self.response_url is None:
            log.info("slack.no_response_url", channel=self.channel.name, user=self.user)
            return
        url = self.response_url
        self._later("respond", lambda: self.channel.respond(url, text))

    def show(self, line: str, *, reply: bool, update: bool = True) -> None:
        """``line`` under the clicked message (its buttons gone) and, with ``reply``, in
        its thread."""
        if self.message is None:
            return
        ref, blocks = self.message
        if update:
            self._later("update", lambda: self.channel.update(ref, decided(blocks, line), line))
        if reply:
            reply_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": line}}]
            self._later("reply", lambda: self.channel.post(reply_blocks, line, thread=ref))

    def _later(self, what: str, call: Callable[[], Awaitable[Any]]) -> None:
        channel = self.channel.name

        async def run() -> None:
            try:
                await call()
            except Exception as exc:  # best effort: the decision is already recorded
                log.warning("slack.show_failed", channel=channel, what=what, error=str(exc))

        self.background.add_task(run)


def _when(at: Any) -> str:
    return str(at.strftime("%Y-%m-%d %H:%M:%S UTC"))
