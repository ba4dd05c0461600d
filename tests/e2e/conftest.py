"""Fixtures of the end-to-end tests: a remediations file whose commands leave a trace, a
unique queue prefix on the shared Redis (its keys deleted afterwards), the process group."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.e2e.procs import Processes, processes
from tests.e2e.vigil_api import write_remediations


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Where the test commands append one line (the attempt) per run, a file per target."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def base_env(tmp_path: Path, runs_dir: Path) -> dict[str, str]:
    """Settings every process of a test shares (short intervals, the test's files)."""
    policies = tmp_path / "policies.yaml"
    policies.write_text("policies: []\n")
    return {
        "VIGIL_POLICIES_FILE": str(policies),
        "VIGIL_REMEDIATIONS_FILE": str(write_remediations(tmp_path, runs_dir)),
        "VIGIL_LOG_LEVEL": "info",
        "VIGIL_ACCESS_LOG": "false",
        "VIGIL_QUEUE_VISIBILITY_TIMEOUT_SECONDS": "1",
        "VIGIL_RECONCILE_INTERVAL_SECONDS": "0.2",
        "VIGIL_WORKER_LEASE_SECONDS": "1",
        "VIGIL_WORKER_RETRY_BASE_SECONDS": "0.1",
        "VIGIL_WORKER_RETRY_MAX_SECONDS": "0.5",
        "VIGIL_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "10",
        "VIGIL_REMEDIATOR_SECRET": "e2e-secret-" + uuid.uuid4().hex,
    }


@pytest.fixture
def queue_prefix() -> Iterator[str]:
    """A prefix of its own on the shared Redis; every key under it is deleted afterwards."""
    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    yield prefix
    import redis

    client = redis.Redis.from_url(services.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.ConnectionError:
        pass
    finally:
        client.close()


@pytest.fixture
def procs(tmp_path: Path, base_env: dict[str, str]) -> Iterator[Processes]:
    with processes(tmp_path, **base_env) as group:
        yield group
