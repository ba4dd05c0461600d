"""The webhook plugin against a real HTTP server that records what it receives."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from vigil.remediation.plugins.base import PluginCall, PluginConfigError, PluginFailed
from vigil.remediation.plugins.webhook import BODY_LIMIT, WebhookPlugin

SECRET = "Bearer s3cret-token"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    content_type: str = "application/json"
    hang: bool = False  # never answer (until the test ends)


@dataclass
class Endpoint:
    """A local HTTP server: ``replies`` by path, every request kept in ``received``."""

    url: str
    replies: dict[str, Reply] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    holder: list[Endpoint] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            state = holder[0]
            length = int(self.headers.get("Content-Length") or 0)
            state.received.append(
                Received(
                    method=self.command,
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=self.rfile.read(length),
                )
            )
            reply = state.replies.get(self.path.partition("?")[0], Reply())
            if reply.hang:
                state.release.wait()
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Endpoint(url=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield holder[0]
    finally:
        holder[0].release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def call(options: dict[str, Any], *, timeout: float = 5.0) -> PluginCall:
    return PluginCall(
        action_id=7,
        attempt=1,
        action="notify",
        target="web-1",
        params={},
        options=options,
        timeout=timeout,
    )


async def test_posts_the_json_body_with_the_headers(endpoint: Endpoint) -> None:
    endpoint.replies["/hooks/restart"] = Reply(200, b'{"accepted": true, "id": 12}')
    options = {
        "url": f"{endpoint.url}/hooks/restart?source=vigil",
        "headers": {"Authorization": SECRET, "X-Vigil-Target": "web-1"},
        "body": {"target": "web-1", "replicas": 3, "tags": ["a", "b"], "dry": False},
    }

    result = await WebhookPlugin().run(call(options))

    [request] = endpoint.received
    assert request.method == "POST"
    assert request.path == "/hooks/restart?source=vigil"
    assert request.headers["authorization"] == SECRET
    assert request.headers["x-vigil-target"] == "web-1"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == options["body"]
    assert result.details == {"status_code": 200, "body": {"accepted": True, "id": 12}}
    assert SECRET not in result.message


async def test_get_without_body_sends_no_content(endpoint: Endpoint) -> None:
    endpoint.replies["/ping"] = Reply(204, b"", content_type="text/plain")

    result = await WebhookPlugin().run(call({"url": f"{endpoint.url}/ping", "method": "get"}))

    [request] = endpoint.received
    assert (request.method, request.path, request.body) == ("GET", "/ping", b"")
    assert "content-type" not in request.headers
    assert result.details == {"status_code": 204, "body": None}


async def test_a_given_content_type_is_kept(endpoint: Endpoint) -> None:
    options = {
        "url": f"{endpoint.url}/x",
        "method": "PUT",
        "headers": {"content-type": "application/vnd.example+json"},
        "body": "scale web-1",
    }

    await WebhookPlugin().run(call(options))

    [request] = endpoint.received
    assert request.method == "PUT"
    assert request.headers["content-type"] == "application/vnd.example+json"
    assert request.body == b'"scale web-1"'


async def test_success_codes_replace_the_2xx_default(endpoint: Endpoint) -> None:
    endpoint.replies["/item"] = Reply(404, b"gone", content_type="text/plain")
    plugin = WebhookPlugin()
    options = {"url": f"{endpoint.url}/item", "method": "DELETE", "success_codes": [200, 404]}

    result = await plugin.run(call(options))
    assert result.details == {"status_code": 404, "body": "gone"}

    endpoint.replies["/item"] = Reply(200)
    await plugin.run(call(options))
    endpoint.replies["/item"] = Reply(202)
    with pytest.raises(PluginFailed) as failed:
        await plugin.run(call(options))
    assert failed.value.retryable is False
    assert [r.method for r in endpoint.received] == ["DELETE"] * 3


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (408, True), (429, True), (400, False), (401, False), (404, False)],
)
async def test_failure_status_codes_are_classified(
    endpoint: Endpoint, status: int, retryable: bool
) -> None:
    endpoint.replies["/hook"] = Reply(status, b'{"error": "nope"}')
    options = {"url": f"{endpoint.url}/hook", "headers": {"Authorization": SECRET}}

    with pytest.raises(PluginFailed) as failed:
        await WebhookPlugin().run(call(options))

    assert failed.value.retryable is retryable
    assert failed.value.details == {"status_code": status, "body": {"error": "nope"}}
    assert str(status) in failed.value.message
    assert SECRET not in repr(failed.value.details) + failed.value.message
    assert len(endpoint.received) == 1


async def test_a_long_body_is_truncated(endpoint: Endpoint) -> None:
    endpoint.replies["/big"] = Reply(500, b"x" * (BODY_LIMIT * 5), content_type="text/plain")

    with pytest.raises(PluginFailed) as failed:
        await WebhookPlugin().run(call({"url": f"{endpoint.url}/big"}))

    assert failed.value.details["body"] == "x" * BODY_LIMIT + "…"


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now.
    with pytest.raises(PluginFailed) as failed:
        await WebhookPlugin().run(call({"url": f"http://127.0.0.1:{port}/hook"}))

    assert failed.value.retryable is True
    assert f"POST http://127.0.0.1:{port}/…" in failed.value.message


async def test_timeout_is_retryable_and_the_option_caps_the_call_timeout(
    endpoint: Endpoint,
) -> None:
    endpoint.replies["/slow"] = Reply(hang=True)
    started = datetime.now(UTC)

    with pytest.raises(PluginFailed) as failed:
        await WebhookPlugin().run(call({"url": f"{endpoint.url}/slow", "timeout": 0.2}, timeout=30))

    assert failed.value.retryable is True
    assert "timed out after 0.2s" in failed.value.message
    # Not the call's 30 s: the option capped it (a busy machine takes long, not that long).
    assert (datetime.now(UTC) - started).total_seconds() < 15
    assert len(endpoint.received) == 1


async def test_the_call_timeout_caps_the_option(endpoint: Endpoint) -> None:
    endpoint.replies["/slow"] = Reply(hang=True)

    with pytest.raises(PluginFailed) as failed:
        await WebhookPlugin().run(call({"url": f"{endpoint.url}/slow", "timeout": 60}, timeout=0.2))

    assert "timed out after 0.2s" in failed.value.message


async def test_credentials_in_the_url_are_not_repeated(endpoint: Endpoint) -> None:
    endpoint.replies["/hook"] = Reply(403)
    host = endpoint.url.removeprefix("http://")

    with pytest.raises(PluginFailed) as failed:
        await WebhookPlugin().run(call({"url": f"http://user:pw@{host}/hook?token=abc"}))

    assert failed.value.retryable is False
    assert "pw" not in failed.value.message
    assert "abc" not in failed.value.message


async def test_a_token_in_the_path_is_not_repeated(endpoint: Endpoint) -> None:
    """Slack-style hooks carry their token in the path."""
    endpoint.replies["/services/T0/B0/s3cretpath"] = Reply(500)
    with pytest.raises(PluginFailed) as failed:
        await WebhookPlugin().run(call({"url": f"{endpoint.url}/services/T0/B0/s3cretpath"}))
    assert failed.value.retryable is True
    assert "s3cretpath" not in failed.value.message
    assert "s3cretpath" not in str(failed.value.details)


async def test_a_rendered_option_that_is_invalid_fails_permanently() -> None:
    with pytest.raises(PluginFailed) as failed:
        await WebhookPlugin().run(call({"url": "not a url"}))

    assert failed.value.retryable is False
    assert "url" in failed.value.message


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "`url` is required"),
        ({"url": 42}, "`url` is required"),
        ({"url": "ftp://files.example/x"}, "http or https"),
        ({"url": "https://"}, "http or https"),
        ({"url": "https://h.example", "method": "FETCH"}, "`method`"),
        ({"url": "https://h.example", "headers": {"X-Token": 5}}, "`headers`"),
        ({"url": "https://h.example", "headers": ["X-Token: a"]}, "`headers`"),
        ({"url": "https://h.example", "timeout": 0}, "`timeout`"),
        ({"url": "https://h.example", "timeout": "soon"}, "`timeout`"),
        ({"url": "https://h.example", "timeout": True}, "`timeout`"),
        ({"url": "https://h.example", "success_codes": [99]}, "`success_codes`"),
        ({"url": "https://h.example", "success_codes": 200}, "`success_codes`"),
        ({"url": "https://h.example", "success_codes": []}, "`success_codes`"),
        ({"url": "https://h.example", "body": {"at": datetime(2026, 1, 1)}}, "`body`"),
        (
            {"url": "https://h.example", "header": {}},
            "unknown option 'header' (did you mean 'headers'?)",
        ),
    ],
)
def test_check_refuses_bad_options(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(PluginConfigError, match=r"^webhook: ") as refused:
        WebhookPlugin().check(options)

    assert problem in str(refused.value)


@pytest.mark.parametrize(
    "options",
    [
        {"url": "https://hooks.example/restart"},
        {"url": "{params.url}"},
        {"url": "https://hooks.example/{target}", "method": "{params.method}"},
        {
            "url": "http://hooks.example/x",
            "method": "patch",
            "headers": {"Authorization": "Bearer literal", "X-Target": "{target}"},
            "body": [{"target": "{target}", "n": "{params.replicas}"}, 1, None, True],
            "timeout": "{params.timeout}",
            "success_codes": [200, "{params.code}", "204"],
        },
    ],
)
def test_check_accepts_placeholders(options: dict[str, Any]) -> None:
    WebhookPlugin().check(options)
