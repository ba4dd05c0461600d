"""The notification settings: webhook URLs validated without being echoed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vigil.settings import Settings, describe_settings_error


def test_webhook_urls_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "VIGIL_NOTIFY_WEBHOOK_URLS",
        " https://hooks.example.com/a?token=x , http://10.0.0.5:8080/b,,https://hooks.example.com/a?token=x",
    )
    monkeypatch.setenv("VIGIL_NOTIFY_RETRY_BASE_SECONDS", "500ms")
    settings = Settings(_env_file=None)
    assert settings.notify_webhook_urls == [
        "https://hooks.example.com/a?token=x",
        "http://10.0.0.5:8080/b",
    ]
    assert settings.notify_retry_base_seconds == 0.5


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_NOTIFY_WEBHOOK_URLS", raising=False)
    settings = Settings(_env_file=None)
    assert settings.notify_webhook_urls == []
    assert (
        settings.notify_timeout_seconds,
        settings.notify_max_attempts,
        settings.notify_retry_base_seconds,
        settings.notify_interval_seconds,
    ) == (5, 5, 1, 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VIGIL_NOTIFY_WEBHOOK_URLS", "hooks.example.com/secret-token"),
        ("VIGIL_NOTIFY_WEBHOOK_URLS", "https://ok.example.com,ftp://files/secret-token"),
        ("VIGIL_NOTIFY_WEBHOOK_URLS", "https:///secret-token"),
        ("VIGIL_NOTIFY_WEBHOOK_URLS", "http://host:port/secret-token"),
        ("VIGIL_NOTIFY_TIMEOUT_SECONDS", "0"),
        ("VIGIL_NOTIFY_MAX_ATTEMPTS", "0"),
        ("VIGIL_NOTIFY_INTERVAL_SECONDS", "0"),
    ],
)
def test_invalid_settings_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    message = describe_settings_error(caught.value)
    assert f"invalid setting {name}:" in message
    assert "secret-token" not in message


def test_the_retry_cap_is_not_below_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_NOTIFY_RETRY_BASE_SECONDS", "10")
    monkeypatch.setenv("VIGIL_NOTIFY_RETRY_MAX_SECONDS", "5")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert "VIGIL_NOTIFY_RETRY_MAX_SECONDS must not be below" in describe_settings_error(
        caught.value
    )
