"""The ``slack`` channel: Block Kit messages posted with a bot token through slack-sdk's
``AsyncWebClient`` (``chat.postMessage``), with buttons on the messages that can be acted on.

- One message per event: its title, the facts (policy, target, severity, value, …), the
  reason (the decision and why), and links to the action and the policy.
- ``approval_waiting``: buttons **Approve**, **Reject** and **Silence 1h** (a silence on the
  policy and target). Slack sends a click to ``POST /api/v1/integrations/slack/interactions``
  (:mod:`vigil.api.routes.slack`); each button's value names this channel and the action, so
  the click is checked against this channel's approvers. A channel without a
  ``signing_secret`` cannot verify a click: its message shows no buttons, and says how to
  approve or reject through the API instead.
- A later event about the same action (running, completed, failed, verified) is a reply in
  the first message's thread (the :class:`~vigil.notify.channels.base.Thread` the sender
  passes), and the first message is updated (``chat.update``) with the outcome, its buttons
  gone. Events that need a person are also shown in the channel (``reply_broadcast``).
- A route's group is one message listing each event; an ``approval_waiting`` among them
  still gets its own message with its buttons.

Block Kit's limits hold: at most 50 blocks, 3,000 characters a text block (150 a header);
longer text is cut and ends with a link to the rest. The bot token is never logged: it
travels only in the ``Authorization`` header, which slack-sdk's debug log redacts.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

import vigil
from vigil.notify.channels.base import (
    TITLES,
    Channel,
    DeliveryFailed,
    Message,
    Thread,
    cut,
    facts,
    http_failure,
    title,
)
from vigil.notify.config import SlackSpec
from vigil.notify.events import NEEDS_A_PERSON, NotificationEvent
from vigil.notify.store import Notification
from vigil.observability.logging import get_logger

log = get_logger(__name__)

MAX_BLOCKS = 50
MAX_TEXT = 3000
"""Characters in a section's text (and in a context element's)."""
MAX_FIELD = 2000
"""Characters in one of a section's fields."""
MAX_FIELDS = 10
MAX_HEADER = 150
MAX_FALLBACK = 3000
"""Characters of the plain ``text`` sent beside the blocks (notifications, screen readers)."""

APPROVE = "vigil.approve"
REJECT = "vigil.reject"
SILENCE = "vigil.silence_1h"
BUTTONS = (APPROVE, REJECT, SILENCE)
"""The ``action_id`` of each button of an ``approval_waiting`` message."""
SILENCE_SECONDS = 3600.0

SLACK_DOMAINS = ("slack.com", "slack-gov.com")
"""Where a click's ``response_url`` may point (Slack's own hosts, GovSlack's too)."""
GROUP_CACHE_SECONDS = 60.0
"""How long a user group's members (``usergroups.users.list``) are taken as known."""
CLICK_MEMORY_SECONDS = 300.0
"""How long a click is remembered to know a replay of it: as long as its signature is
accepted (a signed request older than this is refused anyway)."""
CLICK_MEMORY_SIZE = 10_000
"""The most clicks remembered at once (the oldest forgotten first)."""


# -- what a button carries --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ButtonValue:
    """What a button's ``value`` carries back in a click: the channel whose message it is,
    the action, and the policy and target a silence is for."""

    channel: str
    action: int
    policy: str | None = None
    target: str | None = None

    def encode(self) -> str:
        data: dict[str, Any] = {"channel": self.channel, "action": self.action}
        if self.policy is not None:
            data["policy"] = self.policy
        if self.target is not None:
            data["target"] = self.target
        return orjson.dumps(data).decode()

    @classmethod
    def decode(cls, text: object) -> ButtonValue | None:
        """The value of a click, or ``None`` when it is not one this channel made."""
        if not isinstance(text, str):
            return None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        channel, action = data.get("channel"), data.get("action")
        policy, target = data.get("policy"), data.get("target")
        if not isinstance(channel, str) or isinstance(action, bool) or not isinstance(action, int):
            return None
        if not (policy is None or isinstance(policy, str)):
            return None
        if not (target is None or isinstance(target, str)):
            return None
        if not 1 <= action < 2**63:
            return None
        return cls(channel=channel, action=action, policy=policy, target=target)


# -- rendering ----------------------------------------------------------------------------------

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_BROKEN_ENTITY = re.compile(r"&[a-z]{0,3}…")


def escape(text: str) -> str:
    """``text`` safe inside Slack's ``mrkdwn`` (no link, mention or entity of its own)."""
    return text.translate(_ESCAPES)


def fit(raw: str, limit: int, more: str | None = None) -> str:
    """``raw`` escaped for ``mrkdwn``, within ``limit`` characters: when cut, it ends with
    ``…`` and ``more`` (a link to the rest), still within the limit."""
    text = escape(raw)
    if len(text) <= limit:
        return text
    tail = f" {more}" if more else ""
    piece = cut(text, max(1, limit - len(tail)))
    return _BROKEN_ENTITY.sub("…", piece) + tail


def link(url: str | None, label: str) -> str | None:
    """A ``mrkdwn`` link to ``url`` labelled ``label``; a path (no ``VIGIL_EXTERNAL_URL``)
    is shown as code, since Slack links only absolute URLs."""
    if not url:
        return None
    if url.startswith(("https://", "http://")):
        return f"<{url}|{escape(label)}>"
    return f"{escape(label)}: `{escape(url)}`"


def _links_line(record: Notification, links: Mapping[str, str | None]) -> str:
    parts = [
        link(links.get("action"), f"Action {record.action_id}"),
        link(links.get("policy"), f"Policy {record.policy_name}"),
        link(links.get("notifications"), "Notifications"),
    ]
    return " · ".join(part for part in parts if part)


def _rest(record: Notification, links: Mapping[str, str | None]) -> str | None:
    """The link to read what a cut text left out: the action, else the notifications."""
    url = links.get("action") or links.get("notifications")
    if not url:
        return None
    if url.startswith(("https://", "http://")):
        return f"<{url}|(read the rest)>"
    return f"(the rest: `{escape(url)}`)"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": cut(text, MAX_HEADER)}}


def _detail_text(details: Mapping[str, Any] | None, key: str) -> str | None:
    value = (details or {}).get(key)
    if value is None or value == {} or value == "":
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def buttons(record: Notification, channel: str) -> dict[str, Any]:
    """The actions block of an ``approval_waiting`` message."""
    assert record.action_id is not None
    value = ButtonValue(channel=channel, action=record.action_id).encode()
    silence = ButtonValue(
        channel=channel,
        action=record.action_id,
        policy=record.policy_name,
        target=record.target,
    ).encode()
    about = " on ".join(p for p in (record.policy_name, record.target) if p) or "this"
    return {
        "type": "actions",
        "block_id": f"vigil.approval.{record.action_id}",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE,
                "text": {"type": "plain_text", "text": "Approve"},
                "style": "primary",
                "value": value,
            },
            {
                "type": "button",
                "action_id": REJECT,
                "text": {"type": "plain_text", "text": "Reject"},
                "style": "danger",
                "value": value,
            },
            {
                "type": "button",
                "action_id": SILENCE,
                "text": {"type": "plain_text", "text": "Silence 1h"},
                "value": silence,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Silence for an hour?"},
                    "text": {
                        "type": "mrkdwn",
                        "text": fit(
                            f"Violations of {about} are suppressed for an hour. The action"
                            " waiting here still needs an answer.",
                            300,
                        ),
                    },
                    "confirm": {"type": "plain_text", "text": "Silence 1h"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
        ],
    }


def render(
    record: Notification,
    links: Mapping[str, str | None],
    *,
    channel: str,
    actionable: bool = True,
    clickable: bool = True,
    outcome: str | None = None,
    test: bool = False,
) -> list[dict[str, Any]]:
    """The blocks of one event's message. ``actionable``: the buttons of an
    ``approval_waiting`` one, or (not ``clickable``: the channel has no signing secret to
    verify a click with) how to answer it through the API instead; ``outcome``: a
    ``mrkdwn`` line saying how it ended."""
    more = _rest(record, links)
    blocks: list[dict[str, Any]] = [_header(title(record))]
    if record.reason:
        blocks.append(_section(fit(record.reason, MAX_TEXT, more)))
    pairs = facts(record)[:MAX_FIELDS]
    if pairs:
        fields = [
            {"type": "mrkdwn", "text": f"*{escape(label)}*\n{fit(value, MAX_FIELD - 40)}"}
            for label, value in pairs
        ]
        blocks.append({"type": "section", "fields": fields})
    for key, label in (("error", "Error"), ("params", "Parameters")):
        text = _detail_text(record.details, key)
        if text is not None:
            body = fit(text, MAX_TEXT - len(label) - 8, more)
            blocks.append(_section(f"*{label}:* {body}"))
    line = _links_line(record, links)
    if line:
        blocks.append(_context(cut(line, MAX_TEXT)))
    if (
        actionable
        and record.event == NotificationEvent.APPROVAL_WAITING
        and record.action_id is not None
    ):
        blocks.append(buttons(record, channel) if clickable else _through_the_api(record, links))
    if outcome:
        blocks.append(_context(outcome))
    if test:
        blocks.append(_context(TEST_NOTE))
    return blocks


TEST_NOTE = "A test message, sent by `vigil notifications test`."


def _through_the_api(record: Notification, links: Mapping[str, str | None]) -> dict[str, Any]:
    """What an approval message says in place of its buttons when the channel cannot verify
    a click (no ``signing_secret``): how to approve or reject through the API."""
    action = links.get("action") or f"/api/v1/actions/{record.action_id}"
    return _context(
        cut(
            f"Approve or reject it through Vigil's API: `POST {escape(action)}/approve` or"
            f" `POST {escape(action)}/reject` (this channel has no signing_secret, so it"
            " shows no buttons).",
            MAX_TEXT,
        )
    )


def render_group(
    records: Sequence[Notification],
    links: Mapping[int, Mapping[str, str | None]],
    *,
    test: bool = False,
) -> list[dict[str, Any]]:
    """The blocks of one message listing a route's group of events (oldest first)."""
    blocks: list[dict[str, Any]] = [_header(f"{len(records)} events")]
    room = MAX_BLOCKS - len(blocks) - (1 if test else 0)
    listed = list(records) if len(records) <= room else list(records[: room - 1])
    for record in listed:
        record_links = links.get(record.id, {})
        more = _rest(record, record_links)
        head = f"*{escape(title(record))}*"
        line = _links_line(record, record_links)
        reason_room = MAX_TEXT - len(head) - len(line) - 2
        reason = fit(record.reason, max(1, min(reason_room, 600)), more) if record.reason else ""
        text = "\n".join(part for part in (head, reason, line) if part)
        blocks.append(_section(cut(text, MAX_TEXT)))
    left = len(records) - len(listed)
    if left:
        where = link(links.get(records[-1].id, {}).get("notifications"), "the notifications")
        blocks.append(_context(f"…and {left} more" + (f": {where}" if where else "")))
    if test:
        blocks.append(_context(TEST_NOTE))
    return blocks


def outcome_line(record: Notification) -> str:
    """How an action's story went on, for the first message about it: the event's title,
    when, and why."""
    head = TITLES.get(record.event, record.event.replace("_", " ").capitalize())
    when = record.at.strftime("%Y-%m-%d %H:%M:%S UTC")
    reason = f": {fit(record.reason, 500)}" if record.reason else ""
    return cut(f"*{escape(head)}* at {when}{reason}", MAX_TEXT)


def decided(blocks: Sequence[Mapping[str, Any]], line: str) -> list[dict[str, Any]]:
    """A message's blocks as shown once decided: its buttons gone, ``line`` at the end."""
    kept = [dict(b) for b in blocks if b.get("type") != "actions"]
    kept.append(_context(cut(line, MAX_TEXT)))
    return kept[-MAX_BLOCKS:]


def check_blocks(blocks: Sequence[Mapping[str, Any]]) -> None:
    """Raise ``ValueError`` where ``blocks`` break a Block Kit limit this channel keeps."""
    if not 1 <= len(blocks) <= MAX_BLOCKS:
        raise ValueError(f"{len(blocks)} blocks (1 to {MAX_BLOCKS})")
    for block in blocks:
        texts: list[tuple[str, int]] = []
        if "text" in block:
            texts.append(
                (block["text"]["text"], MAX_HEADER if block["type"] == "header" else MAX_TEXT)
            )
        texts += [(f["text"], MAX_FIELD) for f in block.get("fields", ())]
        for element in block.get("elements", ()):
            if element.get("type") == "button":
                if not element.get("action_id"):
                    raise ValueError("a button without an action_id")
                texts.append((element["text"]["text"], 75))
            elif "text" in element:
                texts.append((element["text"], MAX_TEXT))
        for text, limit in texts:
            if len(text) > limit:
                raise ValueError(
                    f"a {block['type']} text of {len(text)} characters ({limit} at most)"
                )


# -- the channel --------------------------------------------------------------------------------


class _Answer(aiohttp.ClientResponse):
    """A Web API answer whose body is kept when it is not JSON (a proxy's or load balancer's
    error page), so a refusal can say what the far side answered."""

    async def json(self, *args: Any, **kwargs: Any) -> Any:
        text = await self.text(errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
        return {"ok": False, _BODY: text}


_BODY = "vigil.body"


def _refusal(exc: SlackApiError) -> DeliveryFailed:
    """A Web API refusal as a delivery error: its status and Slack's error (with the
    messages Slack adds, e.g. which block is invalid), or the body it answered."""
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    data = getattr(response, "data", None)
    if isinstance(data, Mapping):
        if _BODY in data:
            return http_failure(status, str(data[_BODY]))
        text = str(data.get("error") or "")
        metadata = data.get("response_metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("messages"), list):
            text = "; ".join([text, *map(str, metadata["messages"])])
        return http_failure(status, text or orjson.dumps(dict(data)).decode())
    return http_failure(status, str(data or ""))


def _failure(exc: BaseException, timeout: float) -> DeliveryFailed:
    if isinstance(exc, SlackApiError):
        return _refusal(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return DeliveryFailed(f"timed out after {timeout:g}s")
    return DeliveryFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _api_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class SlackChannel(Channel):
    """A Slack channel reached with a bot token (``chat:write``; ``usergroups:read`` when
    approvers are given as user groups)."""

    type = "slack"

    def __init__(self, spec: SlackSpec, *, timeout: float) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._clicks: dict[tuple[str, ...], float] = {}

    @property
    def clickable(self) -> bool:
        """Whether its messages carry buttons: only with a ``signing_secret`` to verify a
        click with (without one, every click would be refused)."""
        return bool(self.spec.signing_secret)

    @property
    def shown(self) -> str:
        """Where the channel posts, as logs show it."""
        parts = urlsplit(self.spec.api_url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/ {self.spec.channel}"

    def client(self) -> AsyncWebClient:
        """The Web API client (made on first use, in the running event loop)."""
        if self._client is None or self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                response_class=_Answer,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
            self._client = AsyncWebClient(
                token=self.spec.token,
                base_url=_api_url(self.spec.api_url),
                session=self._session,
                timeout=int(max(1, self._timeout)),
                user_agent_prefix=f"vigil/{vigil.__version__}",
                retry_handlers=[],  # the sender retries, with its own backoff
            )
        return self._client

    async def _call(self, call: Awaitable[AsyncSlackResponse]) -> Mapping[str, Any]:
        """One Web API call; raises :class:`DeliveryFailed` unless Slack answered ``ok``."""
        try:
            async with asyncio.timeout(self._timeout):
                response = await call
        except Exception as exc:
            raise _failure(exc, self._timeout) from None
        data = response.data
        if not isinstance(data, Mapping):
            raise http_failure(response.status_code, str(data))
        return data

    async def post(
        self,
        blocks: list[dict[str, Any]],
        text: str,
        *,
        thread: Mapping[str, Any] | None = None,
        broadcast: bool = False,
    ) -> dict[str, Any]:
        """``chat.postMessage``; the ref of the message posted (``channel``, ``ts``)."""
        check_blocks(blocks)
        kwargs: dict[str, Any] = {
            "channel": thread["channel"] if thread else self.spec.channel,
            "text": cut(text, MAX_FALLBACK),
            "blocks": blocks,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if thread:
            kwargs["thread_ts"] = thread["ts"]
            if broadcast:
                kwargs["reply_broadcast"] = True
        data = await self._call(self.client().chat_postMessage(**kwargs))
        return {"channel": str(data.get("channel") or kwargs["channel"]), "ts": str(data["ts"])}

    async def update(self, ref: Mapping[str, Any], blocks: list[dict[str, Any]], text: str) -> None:
        """``chat.update`` of the message ``ref`` names."""
        check_blocks(blocks)
        await self._call(
            self.client().chat_update(
                channel=ref["channel"], ts=ref["ts"], text=cut(text, MAX_FALLBACK), blocks=blocks
            )
        )

    async def send(self, message: Message) -> dict[int, dict[str, Any]]:
        """Post ``message``: a reply in its thread for each event continuing one, a message
        of its own for each ``approval_waiting`` (its buttons), then one message for the
        rest. When a post fails after others went out, the :class:`DeliveryFailed` names
        those in ``taken`` (a reply's ref is empty), so a retry posts only what did not."""
        refs: dict[int, dict[str, Any]] = {}
        try:
            await self._send(message, refs)
        except DeliveryFailed as exc:
            raise DeliveryFailed(str(exc), taken=refs) from None
        return {nid: ref for nid, ref in refs.items() if ref}

    async def _send(self, message: Message, refs: dict[int, dict[str, Any]]) -> None:
        """Post ``message``, adding each notification to ``refs`` as its post goes out."""
        rest: list[Notification] = []
        for record in message.notifications:
            links = message.links.get(record.id, {})
            thread = message.threads.get(record.id)
            if thread is not None:
                await self._continue(record, links, thread, test=message.test)
                refs[record.id] = {}
            elif record.event == NotificationEvent.APPROVAL_WAITING and record.action_id:
                blocks = render(
                    record, links, channel=self.name, clickable=self.clickable, test=message.test
                )
                refs[record.id] = await self.post(blocks, title(record))
            else:
                rest.append(record)
        if len(rest) == 1:
            [record] = rest
            blocks = render(
                record,
                message.links.get(record.id, {}),
                channel=self.name,
                clickable=self.clickable,
                test=message.test,
            )
            refs[record.id] = await self.post(blocks, title(record))
        elif rest:
            blocks = render_group(rest, message.links, test=message.test)
            ref = await self.post(blocks, "; ".join(title(r) for r in rest))
            for record in rest:
                refs[record.id] = {**ref, "group": True}

    async def _continue(
        self,
        record: Notification,
        links: Mapping[str, str | None],
        thread: Thread,
        *,
        test: bool,
    ) -> None:
        """A reply in ``thread``, then the first message updated with the outcome (best
        effort: the reply is what was to be delivered)."""
        blocks = render(record, links, channel=self.name, actionable=False, test=test)
        await self.post(
            blocks, title(record), thread=thread.ref, broadcast=record.event in NEEDS_A_PERSON
        )
        if thread.ref.get("group"):
            return  # a group's message lists other events too: it stays as it is
        origin = render(
            thread.origin, links, channel=self.name, actionable=False, outcome=outcome_line(record)
        )
        try:
            await self.update(thread.ref, origin, title(thread.origin))
        except DeliveryFailed as exc:
            log.warning(
                "notify.slack_update_failed",
                channel=self.name,
                error=str(exc),
                ts=thread.ref.get("ts"),
            )

    # -- what the interactions endpoint asks of the channel --------------------------------

    async def may_decide(self, user: str) -> bool:
        """Whether Slack user ``user`` is an approver: listed, or in a listed user group.
        Raises :class:`DeliveryFailed` when a group's members cannot be read."""
        if user in self.spec.approvers:
            return True
        for group in self.spec.approver_groups:
            if user in await self._members(group):
                return True
        return False

    async def _members(self, group: str) -> frozenset[str]:
        cached = self._groups.get(group)
        now = time.monotonic()
        if cached is not None and now - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        data = await self._call(self.client().usergroups_users_list(usergroup=group))
        users = data.get("users")
        members = (
            frozenset(u for u in users if isinstance(u, str))
            if isinstance(users, list)
            else frozenset()
        )
        self._groups[group] = (now, members)
        return members

    def first_click(self, keys: Sequence[tuple[str, ...]], now: float) -> bool:
        """Whether a click is new: none of ``keys`` (what identifies it: its user, button and
        action with its signed timestamp, or with its ``trigger_id``) was seen within
        :data:`CLICK_MEMORY_SECONDS`. Its keys are remembered either way."""
        for key, seen in list(self._clicks.items()):
            if now - seen < CLICK_MEMORY_SECONDS and len(self._clicks) <= CLICK_MEMORY_SIZE:
                break  # in order of insertion: the rest are newer
            del self._clicks[key]
        replayed = any(key in self._clicks for key in keys)
        for key in keys:
            self._clicks.setdefault(key, now)
        return not replayed

    def forget_click(self, keys: Sequence[tuple[str, ...]]) -> None:
        """Forget ``keys`` (the click they name changed nothing after all)."""
        for key in keys:
            self._clicks.pop(key, None)

    async def respond(self, response_url: str, text: str) -> None:
        """An ephemeral answer to the user who clicked (through the click's ``response_url``;
        only the clicker sees it)."""
        self.client()  # the session
        assert self._session is not None
        webhook = AsyncWebhookClient(response_url, session=self._session, retry_handlers=[])
        try:
            async with asyncio.timeout(self._timeout):
                response = await webhook.send(
                    text=cut(text, MAX_FALLBACK), response_type="ephemeral", replace_original=False
                )
        except Exception as exc:
            raise _failure(exc, self._timeout) from None
        if response.status_code != 200:
            raise http_failure(response.status_code, response.body or "")

    def answers_at(self, response_url: str) -> bool:
        """Whether ``response_url`` (from a signed click) is Slack's, or this channel's Web API
        host (a stand-in or proxy): the only places an answer is posted to."""
        parts, own = urlsplit(response_url), urlsplit(self.spec.api_url)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and any(
            host == domain or host.endswith(f".{domain}") for domain in SLACK_DOMAINS
        ):
            return True
        return (parts.scheme, parts.netloc) == (own.scheme, own.netloc)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = self._client = None
