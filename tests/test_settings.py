"""Settings: one object, validated at start, naming the setting that is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from vigil.settings import Settings, describe_settings_error


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./vigil.db", "sqlite+aiosqlite:///./vigil.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("postgresql://root@127.0.0.1/test", "postgresql+asyncpg://root@127.0.0.1/test"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_url_schemes(given: str, expected: str) -> None:
    assert Settings(database_url=given).database_url == expected


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("VIGIL_") or name in ("DATABASE_URL", "REDIS_URL", "CORS_ORIGINS"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings(_env_file=None)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/vigil/vigil.db"
    assert settings.redis_url is None
    assert settings.port == 8000
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.max_batch_size == 10_000
    assert settings.metrics_retention_seconds == 86400


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/vigil")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/1")
    monkeypatch.setenv("CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("VIGIL_METRICS_RETENTION_SECONDS", "2h")
    monkeypatch.setenv("VIGIL_MAX_BATCH_SIZE", "500")
    settings = Settings(_env_file=None)
    assert settings.database_url == "postgresql+asyncpg://db.example/vigil"
    assert settings.redis_url == "redis://127.0.0.1:6379/1"
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.metrics_retention_seconds == 7200
    assert settings.max_batch_size == 500


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://localhost/vigil"),
        ("DATABASE_URL", "sqlite:///:memory:"),
        ("DATABASE_URL", "sqlite://"),
        ("REDIS_URL", "localhost:6379"),
        ("VIGIL_PORT", "eighty"),
        ("VIGIL_RUNNER_INTERVAL_SECONDS", "0"),
        ("VIGIL_METRICS_RETENTION_SECONDS", "soon"),
        ("VIGIL_LOG_LEVEL", "loud"),
        ("VIGIL_REMEDIATOR_URL", "remediator:8081"),
        ("VIGIL_REMEDIATOR_SECRET", "short"),
        ("VIGIL_QUEUE_PREFIX", "a b"),
        ("VIGIL_WORKER_LEASE_SECONDS", "0"),
        ("VIGIL_WORKER_CONCURRENCY", "0"),
    ],
)
def test_invalid_setting_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert f"invalid setting {name}:" in describe_settings_error(caught.value)


def test_serve_refuses_to_start_with_an_invalid_setting(tmp_path: Path) -> None:
    env = {**os.environ, "VIGIL_PORT": "99999"}
    proc = subprocess.run(
        [sys.executable, "-m", "vigil", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 2
    assert "invalid setting VIGIL_PORT" in proc.stderr


def test_serve_refuses_to_start_with_a_bad_policy_file(tmp_path: Path) -> None:
    bad = tmp_path / "policies.yaml"
    bad.write_text("policies:\n  - name: x\n    condition: {type: nope}\n    action: y\n")
    for path, problem in ((tmp_path / "missing.yaml", "cannot read"), (bad, "condition")):
        proc = subprocess.run(
            [sys.executable, "-m", "vigil", "serve"],
            env={**os.environ, "VIGIL_POLICIES_FILE": str(path)},
            capture_output=True,
            text=True,
            timeout=30,
            cwd=str(tmp_path),
        )
        assert proc.returncode == 2
        assert "invalid setting VIGIL_POLICIES_FILE" in proc.stderr
        assert problem in proc.stderr
        assert not (tmp_path / "vigil.db").exists(), "nothing was created"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"VIGIL_REMEDIATOR_URL": "http://127.0.0.1:8081"}, "VIGIL_REMEDIATOR_SECRET is not"),
        (
            {"VIGIL_WORKER_RETRY_BASE_SECONDS": "10", "VIGIL_WORKER_RETRY_MAX_SECONDS": "5"},
            "VIGIL_WORKER_RETRY_MAX_SECONDS must not be below",
        ),
    ],
)
def test_settings_that_only_work_together_are_checked_together(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    message = describe_settings_error(caught.value)
    assert message.startswith("invalid settings: ")
    assert problem in message


def test_serve_refuses_a_bad_remediations_file_or_a_policy_no_remediation_handles(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "remediations.yaml"
    bad.write_text("remediations:\n  - action: restart-service\n    plugin: teleport\n")
    partial = tmp_path / "partial.yaml"
    partial.write_text("remediations:\n  - action: restart-service\n    plugin: log\n")
    for path, setting, problem in (
        (bad, "VIGIL_REMEDIATIONS_FILE", "teleport"),
        # The packaged policies use scale-up, which this file does not handle.
        (partial, "VIGIL_POLICIES_FILE", "'scale-up'"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "vigil", "serve"],
            env={**os.environ, "VIGIL_REMEDIATIONS_FILE": str(path)},
            capture_output=True,
            text=True,
            timeout=30,
            cwd=str(tmp_path),
        )
        assert proc.returncode == 2, proc.stderr
        assert f"invalid setting {setting}" in proc.stderr
        assert problem in proc.stderr
        assert not (tmp_path / "vigil.db").exists(), "nothing was created"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "VIGIL_POLICY_FILE",
            "unknown setting 'VIGIL_POLICY_FILE' (did you mean 'VIGIL_POLICIES_FILE'?)",
        ),
        (
            "VIGIL_NOTIFY_WEBHOOK_URL",
            "unknown setting 'VIGIL_NOTIFY_WEBHOOK_URL' "
            "(did you mean 'VIGIL_NOTIFY_WEBHOOK_URLS'?)",
        ),
        ("VIGIL_FROBNICATE", "unknown setting 'VIGIL_FROBNICATE'"),
    ],
)
def test_an_unknown_vigil_variable_is_refused_naming_the_likely_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    monkeypatch.setenv(name, "x")
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)
    assert describe_settings_error(raised.value) == f"invalid settings: {message}"


def test_an_unknown_key_in_the_env_file_is_refused(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("VIGIL_LOG_LEVL=debug\nPOSTGRES_PASSWORD=not-vigils\n")
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=env)
    assert describe_settings_error(raised.value) == (
        "invalid settings: unknown setting 'VIGIL_LOG_LEVL' (did you mean 'VIGIL_LOG_LEVEL'?)"
    )
    env.write_text("VIGIL_LOG_LEVEL=debug\nPOSTGRES_PASSWORD=not-vigils\n")
    assert Settings(_env_file=env).log_level == "debug"


def test_the_test_suites_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIGIL_TEST_POSTGRES_URL", "VIGIL_REQUIRE_SERVICES", "VIGIL_CHAOS_SECONDS"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("NOT_VIGILS", "1")
    Settings(_env_file=None)


def test_vigil_refuses_to_start_on_an_unknown_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    proc = subprocess.run(
        [sys.executable, "-m", "vigil", "serve"],
        env={**env, "VIGIL_AUTO_MIGRATES": "false"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "invalid settings: unknown setting 'VIGIL_AUTO_MIGRATES' (did you mean "
        "'VIGIL_AUTO_MIGRATE'?)\n"
    )
    assert list(tmp_path.iterdir()) == [], "nothing was created"
