"""``vigil notifications validate`` and ``vigil notifications test``, and the start-up checks
of the notifications file and of VIGIL_EXTERNAL_URL."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from tests.notify.far_side import Answer, FarSide
from vigil.cli import app
from vigil.cli.notifications import TEST_REASON

runner = CliRunner()

EXAMPLE = """
channels:
  - name: chat
    type: slack
    token: ${SLACK_BOT_TOKEN}
    channel: "#ops"
    signing_secret: ${SLACK_SIGNING_SECRET}
    approvers: [U0123ABCD]
  - name: pager
    type: pagerduty
    routing_key: ${PAGERDUTY_ROUTING_KEY}
  - name: teams
    type: teams
    url: https://example.webhook.office.com/workflows/abc?sig=s3cret-in-the-query
  - name: mail
    type: email
    host: smtp.example.com
    port: 587
    security: starttls
    username: vigil
    password: ${SMTP_PASSWORD}
    from: vigil@example.com
    to: [oncall@example.com]
routes:
  - event: [approval_waiting, action_completed]
    channels: [chat]
  - event: [action_failed, escalation_exhausted, breaker_opened]
    severity: critical
    policy: "web-*"
    channels: [pager]
    continue: true
    group_wait: 30s
  - event: [action_failed, escalation_exhausted, breaker_opened]
    channels: [teams, mail]
    repeat_interval: 4h
"""

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "signing",
    "PAGERDUTY_ROUTING_KEY": "R0UTING",
    "SMTP_PASSWORD": "pw",
}


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the example's variables is set, whatever the environment running the tests."""
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)


def written(tmp_path: Path, text: str, name: str = "notifications.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- validate ------------------------------------------------------------------------------


def test_validate_prints_the_channels_and_routes_of_a_valid_file(tmp_path: Path) -> None:
    path = written(tmp_path, EXAMPLE)
    result = runner.invoke(app, ["notifications", "validate", str(path)], env=SECRETS)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{path}: valid: 4 channels, 3 routes\n"
        "  channel chat: slack, #ops via https://slack.com/…, 1 approver(s)\n"
        "  channel pager: pagerduty, https://events.pagerduty.com/…\n"
        "  channel teams: teams, https://example.webhook.office.com/…\n"
        "  channel mail: email, smtp.example.com:587 (starttls), to oncall@example.com\n"
        "  route 1: action_completed, approval_waiting -> chat\n"
        "  route 2: action_failed, breaker_opened, escalation_exhausted; severity critical;"
        " policy web-* -> pager (continue, group_wait 30s)\n"
        "  route 3: action_failed, breaker_opened, escalation_exhausted -> teams, mail"
        " (repeat_interval 4h)\n"
        "  recorded besides the events always recorded: action_completed\n"
    )
    assert "s3cret" not in result.output  # a URL shows its scheme and host only


def test_validate_names_an_unknown_key_and_the_likely_intended_one(tmp_path: Path) -> None:
    path = written(
        tmp_path,
        "channels:\n"
        "  - {name: hook, type: webhook, url: 'https://hooks.example.com/x', header: {}}\n"
        "routes:\n"
        "  - {event: [action_failed], chanels: [hook]}\n",
    )
    result = runner.invoke(app, ["notifications", "validate", str(path)])
    assert result.exit_code == 1
    assert "channels[0]: unknown field 'header' (did you mean 'headers'?)" in result.output
    assert "routes[0]: unknown field 'chanels' (did you mean 'channels'?)" in result.output
    assert result.output.startswith(f"invalid: {path}: ")

    path.write_text(
        "channels:\n  - {name: hook, type: webhook, url: 'https://hooks.example.com/x'}\n"
        "routes:\n  - {event: [action_failed], channels: [hok]}\n"
    )
    result = runner.invoke(app, ["notifications", "validate", str(path)])
    assert result.exit_code == 1
    assert "routes[0].channels: unknown channel 'hok' (did you mean 'hook'?)" in result.output


def test_validate_refuses_a_literal_secret_without_showing_it(tmp_path: Path) -> None:
    path = written(
        tmp_path,
        "channels:\n  - {name: pager, type: pagerduty, routing_key: R0UTINGKEY123}\n",
    )
    for options in ([], ["--no-env"]):
        result = runner.invoke(app, ["notifications", "validate", str(path), *options])
        assert result.exit_code == 1
        assert "channels[0].routing_key: a secret must be an environment reference" in (
            result.output
        )
        assert "R0UTINGKEY123" not in result.output


def test_an_unset_variable_is_an_error_unless_no_env(tmp_path: Path, unset: None) -> None:
    path = written(tmp_path, EXAMPLE)
    result = runner.invoke(app, ["notifications", "validate", str(path)])
    assert result.exit_code == 1
    for name, field_ in (
        ("SLACK_BOT_TOKEN", "channels[0] (chat).token"),
        ("PAGERDUTY_ROUTING_KEY", "channels[1] (pager).routing_key"),
        ("SMTP_PASSWORD", "channels[3] (mail).password"),
    ):
        assert f"{field_}: environment variable {name} is not set" in result.output

    result = runner.invoke(app, ["notifications", "validate", str(path), "--no-env"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        f"{path}: valid: 4 channels, 3 routes (environment references not checked)\n"
    )


# --- test CHANNEL --------------------------------------------------------------------------


def hook_file(tmp_path: Path, far_side: FarSide) -> Path:
    return written(
        tmp_path,
        "channels:\n"
        f"  - {{name: hook, type: webhook, url: '{far_side.url}/hooks/T0KEN'}}\n"
        "routes:\n  - {channels: [hook]}\n",
    )


def test_a_test_message_reaches_the_channel_and_its_answer_is_printed(
    tmp_path: Path, far_side: FarSide
) -> None:
    far_side.answers = [Answer(200, b"ok")]
    path = hook_file(tmp_path, far_side)
    result = runner.invoke(
        app,
        ["notifications", "test", "hook"],
        env={"VIGIL_NOTIFICATIONS_FILE": str(path), "VIGIL_EXTERNAL_URL": "https://vigil.test"},
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"hook (webhook, {far_side.url}/…) took the test message: answered 200: ok\n"
    )
    [request] = far_side.requests
    body = request.json()
    assert request.path == "/hooks/T0KEN"
    assert request.headers["x-vigil-event"] == "action_completed"
    assert body["reason"] == TEST_REASON
    assert body["links"]["notifications"] == "https://vigil.test/api/v1/notifications"
    assert "T0KEN" not in result.output


def test_a_refused_test_message_prints_the_far_sides_answer(
    tmp_path: Path, far_side: FarSide
) -> None:
    far_side.answers = [Answer(500, b"no_text: the body has no text field")]
    path = hook_file(tmp_path, far_side)
    result = runner.invoke(app, ["notifications", "test", "hook", "--file", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"hook (webhook, {far_side.url}/…) did not take the test message: answered 500: "
        "no_text: the body has no text field\n"
    )
    assert len(far_side.requests) == 1  # tried once: a person reads the answer, not a retry loop


def test_a_webhook_of_the_url_setting_can_be_tested_without_a_file(far_side: FarSide) -> None:
    result = runner.invoke(
        app,
        ["notifications", "test", "webhook-1"],
        env={
            "VIGIL_NOTIFY_WEBHOOK_URLS": f"{far_side.url}/first",
            "VIGIL_NOTIFICATIONS_FILE": None,
            "VIGIL_EXTERNAL_URL": None,
        },
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("webhook-1 (webhook, ")
    [request] = far_side.requests
    body = request.json()
    assert (request.path, body["reason"]) == ("/first", TEST_REASON)
    assert body["links"]["notifications"] == "/api/v1/notifications"  # no VIGIL_EXTERNAL_URL


def test_testing_an_unknown_channel_names_the_likely_one(tmp_path: Path, far_side: FarSide) -> None:
    path = hook_file(tmp_path, far_side)
    result = runner.invoke(app, ["notifications", "test", "hok", "--file", str(path)])
    assert result.exit_code == 2
    assert result.output == (
        f"error: unknown channel 'hok' (did you mean 'hook'?) in {path} (channels: hook)\n"
    )
    assert far_side.requests == []


def test_testing_with_an_invalid_file_says_why(tmp_path: Path, unset: None) -> None:
    path = written(tmp_path, EXAMPLE)
    result = runner.invoke(app, ["notifications", "test", "chat", "--file", str(path)])
    assert result.exit_code == 1
    assert "environment variable SLACK_BOT_TOKEN is not set" in result.output


# --- start-up ------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``vigil serve`` runs up to listening (and listens not): the servers it would run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vigil.cli._configure_logging", lambda settings: None)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'vigil.db'}")
    ran: list[str] = []
    monkeypatch.setattr("vigil.cli._serve", lambda api, settings, host, port: ran.append(host))
    return ran


@pytest.mark.parametrize("command", [["serve"], ["worker"]])
def test_serve_and_worker_refuse_an_invalid_notifications_file(
    tmp_path: Path, served: list[str], command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = written(tmp_path, "channels:\n  - {name: hook, type: webhok, url: 'https://h.test'}\n")
    monkeypatch.setenv("VIGIL_NOTIFICATIONS_FILE", str(path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert result.output.startswith(f"invalid setting VIGIL_NOTIFICATIONS_FILE: {path}: ")
    assert "channels[0].type: unknown channel type 'webhok' (did you mean 'webhook'?)" in (
        result.output
    )
    assert served == []


def test_serve_refuses_a_file_naming_an_unset_variable(
    tmp_path: Path, served: list[str], monkeypatch: pytest.MonkeyPatch, unset: None
) -> None:
    monkeypatch.setenv("VIGIL_NOTIFICATIONS_FILE", str(written(tmp_path, EXAMPLE)))
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "invalid setting VIGIL_NOTIFICATIONS_FILE:" in result.output
    assert "environment variable SLACK_BOT_TOKEN is not set" in result.output
    assert served == []


def test_serve_says_once_that_links_are_paths_without_an_external_url(
    served: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIGIL_EXTERNAL_URL", raising=False)
    with structlog.testing.capture_logs() as logs:
        result = runner.invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert served == ["127.0.0.1"]
    [said] = [e for e in logs if e["event"] == "notify.links_are_paths"]
    assert "VIGIL_EXTERNAL_URL is not set" in said["note"]

    monkeypatch.setenv("VIGIL_EXTERNAL_URL", "https://vigil.example.com")
    with structlog.testing.capture_logs() as logs:
        result = runner.invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert not [e for e in logs if e["event"] == "notify.links_are_paths"]


def test_a_worker_needs_the_routes_but_not_the_channels_secrets(
    tmp_path: Path, unset: None, database_url: str
) -> None:
    from vigil.container import WORKER_ROLE, build_container
    from vigil.notify.events import NotificationEvent
    from vigil.settings import Settings

    settings = Settings(database_url=database_url, notifications_file=written(tmp_path, EXAMPLE))
    container = build_container(settings, role=WORKER_ROLE)
    assert container.notifier.channels == {}
    assert container.notifications.wants(NotificationEvent.ACTION_COMPLETED)
    assert "signing" not in repr(container.notifications)
