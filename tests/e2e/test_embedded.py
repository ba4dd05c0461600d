"""The embedded default end to end: one ``vigil serve`` process on a SQLite file, no Redis.

The API records the action, the in-process queue hands it to the in-process worker, which
runs the remediation's command in-process (through the same deduplicating remediator code)
and records the outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import Processes, wait_for
from tests.e2e.vigil_api import Api, runs, transitions


@pytest.fixture
def api(procs: Processes, tmp_path: Path) -> Iterator[Api]:
    proc = procs.serve(env={"DATABASE_URL": f"sqlite:///{tmp_path / 'vigil.db'}"})
    client = Api(proc.url, procs)
    yield client
    client.close()


@pytest.mark.timeout(60)
def test_a_manual_action_runs_its_command_once(api: Api, runs_dir: Path) -> None:
    action_id = api.create("web-1")
    action = api.wait_status(action_id, "completed", "failed")

    assert action["status"] == "completed", action
    assert action["attempts"] == 1
    assert runs(runs_dir, "web-1") == [1]
    assert transitions(api.history(action_id)) == [
        (None, "pending", 0),
        ("pending", "running", 1),
        ("running", "completed", 1),
    ]
    stats = api.stats()
    assert stats["backend"] == "memory"
    assert stats["tasks_completed"] >= 1
    assert stats["queue_length"] == 0


@pytest.mark.timeout(60)
def test_a_failing_command_is_retried_dead_lettered_and_redriven(api: Api, runs_dir: Path) -> None:
    action_id = api.create("fail-1")
    action = api.wait_status(action_id, "failed")

    # max_attempts 2 for fail-*: the first failure is retried once, the second is final.
    assert action["attempts"] == 2
    assert "exited with 1" in (action["error_message"] or ""), action
    assert runs(runs_dir, "fail-1") == [1, 2]
    assert transitions(api.history(action_id)) == [
        (None, "pending", 0),
        ("pending", "running", 1),
        ("running", "pending", 1),
        ("pending", "running", 2),
        ("running", "failed", 2),
    ]
    dead = wait_for(
        lambda: [t for t in api.dead_letter()["tasks"] if t["action_id"] == action_id],
        timeout=5,
        what="the failed action in the dead letter",
        procs=api.procs,
    )
    assert len(dead) == 1
    assert dead[0]["target"] == "fail-1"
    assert api.stats()["dead_letter_length"] >= 1

    redriven = api.redrive([dead[0]["task_id"]])
    assert redriven["redriven"] == 1, redriven
    assert redriven["actions"][0]["id"] == action_id
    assert redriven["actions"][0]["status"] == "pending"

    # The redrive continues the attempt count: attempt 3 runs (and fails again, for good,
    # with a fresh budget of 2 attempts: 3 and 4).
    def failed_again() -> bool:
        found = api.action(action_id)
        return bool(found["status"] == "failed" and found["attempts"] == 4)

    wait_for(
        failed_again,
        timeout=10,
        what="the re-driven action to fail again after attempts 3 and 4",
        procs=api.procs,
    )
    assert runs(runs_dir, "fail-1") == [1, 2, 3, 4]
    rows = transitions(api.history(action_id))
    assert rows[5:] == [
        ("failed", "pending", 2),
        ("pending", "running", 3),
        ("running", "pending", 3),
        ("pending", "running", 4),
        ("running", "failed", 4),
    ], rows
