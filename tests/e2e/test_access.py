"""Access control across processes: a key created from the CLI (another process) is
required by a running server within a few seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Processes, wait_for


@pytest.mark.timeout(60)
def test_a_key_made_by_another_process_is_required_within_seconds(
    procs: Processes, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'vigil.db'}"
    server = procs.serve(env={"DATABASE_URL": database_url})
    actions = f"{server.url}/api/v1/actions"
    assert httpx.get(actions, timeout=5).status_code == 200  # no key yet: open

    created = subprocess.run(
        [sys.executable, "-m", "vigil", "keys", "create", "ops", "--role", "operator"],
        env={**os.environ, **procs.base_env, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    made = time.monotonic()
    wait_for(
        lambda: httpx.get(actions, timeout=5).status_code == 401 or None,
        timeout=10,
        what="the server to require a key",
    )
    print(f"key noticed after {time.monotonic() - made:.2f}s")
    assert time.monotonic() - made < 5
    assert httpx.get(actions, headers={"X-API-Key": key}, timeout=5).status_code == 200
    forbidden = httpx.post(
        f"{server.url}/api/v1/keys",
        json={"name": "x", "role": "admin"},
        headers={"X-API-Key": key},
        timeout=5,
    )
    assert forbidden.status_code == 403
    assert key not in server.log_path.read_text(errors="replace")
