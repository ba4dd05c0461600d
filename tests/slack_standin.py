"""A stand-in for Slack's Web API: a real HTTP server on a free port that slack-sdk talks to
(the channel's ``api_url``), checking each call it gets.

Every call must carry ``Authorization: Bearer <the token>``; ``chat.postMessage`` and
``chat.update`` must carry a valid Block Kit body (1 to 50 blocks, each text within its limit,
each button with an ``action_id`` unique in the message). A call that breaks a rule is
answered as Slack would (``ok: false``) and noted in :attr:`SlackStandIn.problems`, which a
test expects empty. It also takes the answers posted to a click's ``response_url``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

TOKEN = "xoxb-test-token-0123456789"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL_ID = "C0VIGIL01"
WAIT_SECONDS = 10.0


@dataclass
class Call:
    """One Web API call as the stand-in received it."""

    method: str
    http_method: str
    args: dict[str, Any]


@dataclass
class Posted:
    """A message as it stands in the stand-in's channel."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: int = 0


@dataclass
class SlackStandIn:
    token: str = TOKEN
    groups: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    messages: dict[str, Posted] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)
    fail: tuple[int, str, str] | None = None
    """Answer every Web API call with (status, body, content type) instead."""
    fail_after: int = 0
    """With ``fail``: how many Web API calls are answered as usual first."""
    _runner: web.AppRunner | None = None
    _port: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _next_ts: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/api/"

    @property
    def response_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/actions/T0/1234/abcd"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/actions/{rest:.*}", self._respond)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests read ----------------------------------------------------------------

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def top_level(self) -> list[Posted]:
        return [m for m in self.messages.values() if m.thread_ts is None]

    def replies(self, ts: str) -> list[Posted]:
        return [m for m in self.messages.values() if m.thread_ts == ts]

    async def wait_for(self, what: Callable[[], Any]) -> Any:
        """Wait until ``what()`` is truthy (re-checked at each call received, for up to
        ten seconds); its value."""
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(what)
        return what()

    async def _note(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    # -- the Web API ----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST":
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        try:
            if self.fail is not None and len(self.calls) >= self.fail_after:
                status, body, content_type = self.fail
                return web.Response(status=status, text=body, content_type=content_type)
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return self._refuse(method, "not_authed", "no or wrong bearer token")
            if method == "chat.postMessage":
                return self._post_message(args)
            if method == "chat.update":
                return self._update(args)
            if method == "usergroups.users.list":
                users = self.groups.get(str(args.get("usergroup")))
                if users is None:
                    return web.json_response({"ok": False, "error": "no_such_subteam"})
                return web.json_response({"ok": True, "users": users})
            return self._refuse(method, "unknown_method", f"unexpected method {method}")
        finally:
            await self._note(Call(method, request.method, args))

    def _refuse(self, method: str, error: str, why: str) -> web.Response:
        self.problems.append(f"{method}: {why}")
        return web.json_response({"ok": False, "error": error})

    def _channel(self, name: object) -> str:
        return CHANNEL_ID if name in ("#ops", CHANNEL_ID) else str(name)

    def _post_message(self, args: Mapping[str, Any]) -> web.Response:
        problem = message_problem(args)
        if problem:
            return self._refuse("chat.postMessage", "invalid_blocks", problem)
        channel = self._channel(args["channel"])
        if channel != CHANNEL_ID:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        thread = args.get("thread_ts")
        if thread is not None and thread not in self.messages:
            return self._refuse("chat.postMessage", "thread_not_found", f"no message {thread}")
        self._next_ts += 1
        ts = f"{int(time.time())}.{self._next_ts:06d}"
        self.messages[ts] = Posted(channel, ts, args["text"], list(args["blocks"]), thread)
        return web.json_response(
            {"ok": True, "channel": channel, "ts": ts, "message": {"ts": ts, "text": args["text"]}}
        )

    def _update(self, args: Mapping[str, Any]) -> web.Response:
        problem = message_problem(args)
        if problem:
            return self._refuse("chat.update", "invalid_blocks", problem)
        posted = self.messages.get(str(args.get("ts")))
        if posted is None or posted.channel != args.get("channel"):
            return self._refuse("chat.update", "message_not_found", f"no message {args}")
        posted.blocks, posted.text = list(args["blocks"]), args["text"]
        posted.updates += 1
        return web.json_response({"ok": True, "channel": posted.channel, "ts": posted.ts})

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("response_type") != "ephemeral" or not body.get("text"):
            self.problems.append(f"response_url: not an ephemeral answer: {body}")
        async with self._changed:
            self.responses.append(body)
            self._changed.notify_all()
        return web.Response(text="ok")


def message_problem(args: Mapping[str, Any]) -> str | None:
    """What breaks Block Kit's rules in a message body, if anything."""
    if not isinstance(args.get("channel"), str) or not isinstance(args.get("text"), str):
        return "channel and text are required"
    blocks = args.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return f"1 to 50 blocks, not {len(blocks) if isinstance(blocks, list) else blocks!r}"
    action_ids: list[str] = []
    for block in blocks:
        problem = _block_problem(block, action_ids)
        if problem:
            return problem
    if len(set(action_ids)) != len(action_ids):
        return "two buttons with the same action_id"
    return None


def _block_problem(block: Mapping[str, Any], action_ids: list[str]) -> str | None:
    kind = block.get("type")
    if kind not in ("header", "section", "context", "actions", "divider"):
        return f"unknown block type {kind!r}"
    texts: list[tuple[str, int]] = []
    if "text" in block:
        texts.append((block["text"]["text"], 150 if kind == "header" else 3000))
    fields = block.get("fields", [])
    if len(fields) > 10:
        return "a section with more than 10 fields"
    texts += [(f["text"], 2000) for f in fields]
    for element in block.get("elements", []):
        problem = _element_problem(element, texts, action_ids)
        if problem:
            return problem
    for text, limit in texts:
        if not text or len(text) > limit:
            return f"a {kind} text of {len(text)} characters (1 to {limit})"
    return None


def _element_problem(
    element: Mapping[str, Any], texts: list[tuple[str, int]], action_ids: list[str]
) -> str | None:
    if element.get("type") != "button":
        if "text" in element:
            texts.append((element["text"], 3000))
        return None
    if not element.get("action_id"):
        return "a button without an action_id"
    if len(element.get("value", "")) > 2000:
        return "a button value above 2000 characters"
    action_ids.append(element["action_id"])
    texts.append((element["text"]["text"], 75))
    return None


def sign(body: str, *, secret: str = SIGNING_SECRET, at: float | None = None) -> dict[str, str]:
    """The headers Slack sends with ``body``: its timestamp and signature."""
    timestamp = str(int(time.time() if at is None else at))
    base = f"v0:{timestamp}:{body}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


_clicks = itertools.count(1)


def click(
    posted: Posted,
    action_id: str,
    *,
    user: str = "U0APPROVER",
    username: str = "alice",
    response_url: str,
    trigger_id: str | None = None,
) -> str:
    """The form body of a click on ``posted``'s button ``action_id`` (a ``block_actions``
    payload as Slack sends it; each click has a ``trigger_id`` of its own unless given)."""
    number = next(_clicks)
    button = next(
        element
        for block in posted.blocks
        if block.get("type") == "actions"
        for element in block["elements"]
        if element.get("action_id") == action_id
    )
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": username, "name": username, "team_id": "T0"},
        "api_app_id": "A0VIGIL",
        "team": {"id": "T0", "domain": "example"},
        "container": {
            "type": "message",
            "message_ts": posted.ts,
            "channel_id": posted.channel,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or f"{number}.{int(time.time())}.0a1b2c",
        "channel": {"id": posted.channel, "name": "ops"},
        "message": {
            "type": "message",
            "ts": posted.ts,
            "text": posted.text,
            "blocks": posted.blocks,
        },
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "b",
                "text": button["text"],
                "value": button["value"],
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})
