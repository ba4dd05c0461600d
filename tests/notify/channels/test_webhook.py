"""The webhook channel against a local HTTP receiver: the default body, body templates,
templated headers and the signature."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.notify.channels.conftest import (
    LONG_ANSWER,
    deliver,
    failure,
    message,
    notification,
    refused,
)
from tests.notify.far_side import Answer, FarSide, closed_port
from vigil.notify.channels.base import DeliveryFailed
from vigil.notify.channels.registry import build_channels
from vigil.notify.channels.webhook import WebhookChannel
from vigil.notify.config import NotificationsInvalid, WebhookSpec, parse_notifications
from vigil.remediation.signing import SignatureInvalid, verify

SECRET = "wh-s3cret-0123456789"
NOW = 1_796_680_000.0


def hook(url: str, settings: str = "", env: dict[str, str] | None = None) -> WebhookChannel:
    text = f"""
channels:
  - name: hook
    type: webhook
    url: {url}/hook
{settings}
"""
    notifications = parse_notifications(text, source="notifications.yaml", env=env or {})
    spec = notifications.channels["hook"]
    assert isinstance(spec, WebhookSpec)
    return WebhookChannel(spec, timeout=2.0, clock=lambda: NOW)  # signed at a fixed time


def refusal(settings: str, env: dict[str, str] | None = None) -> str:
    """Why a webhook channel with ``settings`` is refused when the file is loaded."""
    with pytest.raises(NotificationsInvalid) as caught:
        hook("https://hooks.example.com", settings, env)
    return str(caught.value)


def templated(url: str, template: str) -> WebhookChannel:
    """A webhook channel whose body is rendered from ``template``."""
    return hook(url, f"    body_template: {orjson.dumps(template).decode()}")


def only(far_side: FarSide) -> tuple[dict[str, str], bytes]:
    [request] = far_side.requests
    assert request.path == "/hook"
    return request.headers, request.body


def template_error(far_side: FarSide) -> str:
    """Why the template failed, of the one request, which carries the default body."""
    headers, body = only(far_side)
    assert orjson.loads(body) == DEFAULT_BODY
    return headers["x-vigil-template-error"]


DEFAULT_BODY: dict[str, Any] = {
    "id": 11,
    "event": "action_failed",
    "at": "2026-12-07T21:30:05Z",
    "policy": "web-cpu-high",
    "target": "web-01",
    "action": 42,
    "severity": "critical",
    "episode": 7,
    "tags": {"team": "web"},
    "reason": "scale-up on web-01 failed at attempt 3: quota exceeded",
    "details": {"action": "scale-up", "value": 97.5, "attempt": 3},
    "links": {
        "action": "https://vigil.example.com/api/v1/actions/42",
        "policy": "https://vigil.example.com/api/v1/policies/web-cpu-high",
        "notifications": "https://vigil.example.com/api/v1/notifications",
    },
}


async def test_the_default_body(far_side: FarSide) -> None:
    text = f"channels:\n  - name: hook\n    type: webhook\n    url: {far_side.url}/hook\n"
    channel = build_channels(parse_notifications(text, source="n.yaml"), timeout=2.0)["hook"]
    assert await deliver(channel) == [{}]
    headers, body = only(far_side)
    assert orjson.loads(body) == DEFAULT_BODY
    assert headers["content-type"] == "application/json"
    assert headers["x-vigil-event"] == "action_failed"
    assert "x-vigil-signature" not in headers


async def test_a_test_message_says_so(far_side: FarSide) -> None:
    channel = hook(far_side.url, '    body_template: "{{ test | tojson }}"')
    await deliver(channel, message(test=True))
    headers, body = only(far_side)
    assert (headers["x-vigil-test"], body) == ("true", b"true")


async def test_a_body_template_renders_the_event(far_side: FarSide) -> None:
    template = (
        '{"text": {{ (title ~ ": " ~ reason) | tojson }}, "value": {{ details.value }},'
        ' "link": {{ links.action | tojson }}, "at": {{ at | tojson }},'
        ' "events": [{% for n in notifications %}{{ n.id }}{{ "," if not loop.last }}'
        '{% endfor %}], "count": {{ count }}}'
    )
    channel = templated(far_side.url, template)
    record = notification(reason='quota "exceeded"\nretry later')
    await deliver(channel, message(record))
    headers, body = only(far_side)
    assert "x-vigil-template-error" not in headers
    assert orjson.loads(body) == {
        "text": 'Action failed: web-cpu-high on web-01: quota "exceeded"\nretry later',
        "value": 97.5,
        "link": "https://vigil.example.com/api/v1/actions/42",
        "at": "2026-12-07T21:30:05Z",
        "events": [11],
        "count": 1,
    }


async def test_a_group_is_rendered_once_with_each_event(far_side: FarSide) -> None:
    template = '{"targets": {{ notifications | map(attribute="target") | list | tojson }}}'
    channel = templated(far_side.url, template)
    records = [notification(id=i, target=f"web-0{i}") for i in (1, 2, 3)]
    await deliver(channel, message(*records))
    _, body = only(far_side)
    assert orjson.loads(body) == {"targets": ["web-01", "web-02", "web-03"]}


async def test_a_template_failing_at_send_time_delivers_the_default_body(
    far_side: FarSide,
) -> None:
    template = '{"gone": {{ details.missing | tojson }}}'
    channel = templated(far_side.url, template)
    await deliver(channel)
    assert template_error(far_side) == "UndefinedError: 'dict object' has no attribute 'missing'"


async def test_the_sandbox_holds(far_side: FarSide) -> None:
    template = "{{ reason.__class__.__mro__[1].__subclasses__() }}"
    channel = templated(far_side.url, template)
    await deliver(channel)
    assert template_error(far_side).startswith("SecurityError:")


@pytest.mark.parametrize(
    ("template", "error"),
    [
        # nested loops writing, then writing nothing
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "the loops went through more than 100000 items",
        ),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "the loops went through more than 100000 items",
        ),
        ("{{ reason * 100000 }}", "a value of more than 1048576 items"),
        ("{{ 10 ** 100000 }}", "an exponent above 1000"),
        (
            "{% for i in range(1000) %}{{ reason * 1000 }}{% endfor %}",
            "the rendered text passed 1048576 characters",
        ),
        ("{{ reason.ljust(2 ** 40) }}", "a width of more than 1048576 characters"),
        ("{{ reason | center(2 ** 40) }}", "a width of more than 1048576 characters"),
        ('{{ "%1099511627776s" % reason }}', "a value of more than 1048576 characters"),
    ],
)
async def test_a_runaway_template_is_stopped(far_side: FarSide, template: str, error: str) -> None:
    channel = templated(far_side.url, template)
    await deliver(channel)
    assert template_error(far_side) == error


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (
            '{"a": {{ reason }',
            "channels[0].body_template: not a valid template: line 1: unexpected '}'",
        ),
        (
            '{"a": {{ polcy }}}',
            "channels[0].body_template: unknown variable 'polcy' (did you mean 'policy'?);"
            " a template may use id, event, at, policy, target, action, severity, episode,"
            " tags, reason, details, links, title, notifications, count, test",
        ),
        (
            "{% for n in notifications %}{{ n.id }}",
            "channels[0].body_template: not a valid template: line 1: Unexpected end of"
            " template. Jinja was looking for the following tags: 'endfor' or 'else'. The"
            " innermost block that needs to be closed is 'for'.",
        ),
    ],
)
def test_a_template_that_cannot_work_is_refused_at_validation(template: str, problem: str) -> None:
    error = refusal(f"    body_template: {orjson.dumps(template).decode()}")
    assert error == f"notifications.yaml: {problem}"


def test_a_header_template_that_cannot_work_is_refused_at_validation() -> None:
    assert refusal('    headers:\n      X-Policy: "{{ policy"') == (
        "notifications.yaml: channels[0].headers: header X-Policy: not a valid template: line 1:"
        " unexpected end of template, expected 'end of print statement'."
    )


async def test_headers_resolve_the_environment_and_render(far_side: FarSide) -> None:
    settings = """    headers:
      Authorization: Bearer ${HOOK_TOKEN}
      X-Policy: "{{ policy }}/{{ target }}"
      X-Weird: "${ODD_VALUE}"
      Content-Type: application/vnd.example+json"""
    env = {"HOOK_TOKEN": "t0k3n", "ODD_VALUE": "a {{ b"}
    channel = hook(far_side.url, settings, env)
    await deliver(channel)
    headers, _ = only(far_side)
    assert headers["authorization"] == "Bearer t0k3n"
    assert headers["x-policy"] == "web-cpu-high/web-01"
    assert headers["x-weird"] == "a {{ b"  # a value read from the environment is sent as is
    assert headers["content-type"] == "application/vnd.example+json"


async def test_the_signature_verifies_as_the_remediators(far_side: FarSide) -> None:
    channel = hook(far_side.url, "    secret: ${HOOK_SECRET}", {"HOOK_SECRET": SECRET})
    await deliver(channel)
    headers, body = only(far_side)
    assert headers["x-vigil-timestamp"] == str(int(NOW))
    verify(SECRET.encode(), headers["x-vigil-timestamp"], headers["x-vigil-signature"], body, NOW)
    with pytest.raises(SignatureInvalid):
        verify(b"another", headers["x-vigil-timestamp"], headers["x-vigil-signature"], body, NOW)
    with pytest.raises(SignatureInvalid):
        verify(
            SECRET.encode(),
            headers["x-vigil-timestamp"],
            headers["x-vigil-signature"],
            body + b" ",
            NOW,
        )


async def test_a_signed_template_signs_the_rendered_body(far_side: FarSide) -> None:
    settings = '    secret: ${HOOK_SECRET}\n    body_template: "{{ reason | tojson }}"'
    channel = hook(far_side.url, settings, {"HOOK_SECRET": SECRET})
    await deliver(channel)
    headers, body = only(far_side)
    assert body == b'"scale-up on web-01 failed at attempt 3: quota exceeded"'
    verify(SECRET.encode(), headers["x-vigil-timestamp"], headers["x-vigil-signature"], body, NOW)


def test_a_literal_secret_is_refused() -> None:
    error = refusal("    secret: hunter2")
    assert "a secret must be an environment reference" in error
    assert "hunter2" not in error


async def test_a_refusal_is_a_failure_with_the_answer(far_side: FarSide) -> None:
    far_side.answers = [Answer(500, LONG_ANSWER)]
    channel = hook(far_side.url)
    assert await failure(channel) == refused(500)


async def test_a_far_side_that_is_down() -> None:
    channel = hook(f"http://127.0.0.1:{closed_port()}")
    assert "ConnectError" in await failure(channel)


HOOK_TOKEN = "s3cr3t-token"


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ("    headers:\n      Authorization: Bearer ${HOOK_TOKEN}", "headers.Authorization"),
        ("    headers:\n      X-Route: ${HOOK_TOKEN}", "headers.X-Route"),
        ("    secret: ${HOOK_TOKEN}", "secret"),
    ],
)
@pytest.mark.parametrize("value", [f"{HOOK_TOKEN}\n", f"{HOOK_TOKEN}\r\nX-Other: 1", "a\x00b"])
def test_a_variable_holding_a_line_break_is_refused_when_loaded(
    settings: str, where: str, value: str
) -> None:
    error = refusal(settings, {"HOOK_TOKEN": value})
    assert error == (
        f"notifications.yaml: channels[0] (hook).{where}: environment variable HOOK_TOKEN"
        " holds a line break or other control character (the value is not shown; a secret"
        " read from a file often ends in a newline: remove it)"
    )
    assert HOOK_TOKEN not in error


async def test_a_header_the_http_library_refuses_fails_without_showing_its_value(
    far_side: FarSide,
) -> None:
    # A value that did not come from the file (the load refuses such a variable).
    channel = hook(far_side.url)
    channel.spec = channel.spec.model_copy(
        update={"headers": {"Authorization": f"Bearer {HOOK_TOKEN}\n"}}
    )
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(message())
    channel.spec = channel.spec.model_copy(update={"headers": {"X-Name": "café"}})
    with pytest.raises(DeliveryFailed) as not_ascii:
        await deliver(channel)
    assert str(caught.value) == (
        "a request header is not valid HTTP (a line break or control character)"
    )
    assert (
        str(not_ascii.value) == "a request header is not valid HTTP (a character that is not ASCII)"
    )
    assert far_side.requests == []


@pytest.mark.parametrize(
    "name", ["Authorization", "proxy-authorization", "X-Api-Key", "X-Auth-Token", "X-Secret"]
)
def test_a_literal_credential_in_a_header_is_refused(name: str) -> None:
    settings = f"    headers:\n      {name}: Bearer {HOOK_TOKEN}"
    error = refusal(settings)
    assert error == (
        f"notifications.yaml: channels[0].headers: header {name}: a header carrying a credential"
        " must take it from an environment reference such as 'Bearer ${HOOK_TOKEN}', never the"
        " secret itself (the value is not shown)"
    )
    assert HOOK_TOKEN not in error
    settings = f"    headers:\n      {name}: Bearer ${{HOOK_TOKEN}}"
    channel = hook("https://hooks.example.com", settings, {"HOOK_TOKEN": HOOK_TOKEN})
    assert channel.spec.headers == {name: f"Bearer {HOOK_TOKEN}"}


def test_a_literal_header_with_a_line_break_is_refused() -> None:
    settings = '    headers:\n      X-Route: "a\\r\\nX-Injected: 1"'
    assert refusal(settings) == (
        "notifications.yaml: channels[0].headers: header X-Route: a line break or other"
        " control character in the value (the value is not shown)"
    )
