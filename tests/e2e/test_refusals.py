"""Processes that cannot do their job refuse to start: exit 2 with a message saying why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vigil.local import clean_env


def run_vigil(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil", *args],
        cwd=tmp_path,
        env=clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'vigil.db'}", **env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_worker_without_redis_exits_2_naming_redis_url(tmp_path: Path) -> None:
    result = run_vigil(tmp_path, "worker")
    assert result.returncode == 2, result
    assert "REDIS_URL" in result.stderr
    assert "vigil serve" in result.stderr  # where the embedded worker runs instead
    assert "Traceback" not in result.stderr


def test_a_remediator_without_a_secret_exits_2_naming_the_setting(tmp_path: Path) -> None:
    result = run_vigil(tmp_path, "remediator")
    assert result.returncode == 2, result
    assert "VIGIL_REMEDIATOR_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_remediator_with_a_short_secret_exits_2(tmp_path: Path) -> None:
    result = run_vigil(tmp_path, "remediator", VIGIL_REMEDIATOR_SECRET="too-short")
    assert result.returncode == 2, result
    assert "VIGIL_REMEDIATOR_SECRET" in result.stderr
    assert "16 characters" in result.stderr
    assert "Traceback" not in result.stderr
