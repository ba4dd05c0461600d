"""The remediator killed (SIGKILL) while it runs a slow attempt, and the worker waiting for
it killed too: the attempt's command goes on running on the host, so the next attempt may
start only after the dead run's record has expired (the remediation's timeout plus the
remediator's 30 s grace) -- never beside it -- and the same attempt never runs twice.

Real processes on Redis and PostgreSQL (the storage rules themselves run on both databases
in the unit tests; this one is about processes and time, and takes some 45 s).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests import services
from tests.e2e.procs import Processes, VigilProcess, wait_for
from tests.e2e.vigil_api import ACTION, Api, transitions
from vigil.local import free_port
from vigil.remediation.service import EXPIRY_GRACE_SECONDS

TIMEOUT = 6.0  # the remediation's timeout
SLEEP = 4.0  # how long its command runs
TARGET = "long-1"


def write_remediations(directory: Path, trace: Path) -> Path:
    """``restart-service`` runs a command that notes its start and end, with the time."""
    script = (
        f'echo "start $1 $(date +%s.%N)" >> {trace}; sleep {SLEEP:g}; '
        f'echo "end $1 $(date +%s.%N)" >> {trace}'
    )
    path = directory / "slow-remediations.yaml"
    path.write_text(
        "remediations:\n"
        f"  - action: {ACTION}\n"
        "    plugin: command\n"
        f"    with: {{argv: [sh, -c, {json.dumps(script)}, '{{target}}', '{{attempt}}']}}\n"
        f"    timeout: {TIMEOUT:g}\n"
        "    retries: {max_attempts: 3, backoff_seconds: 0.1}\n"
    )
    return path


def runs(trace: Path) -> list[tuple[str, int, float]]:
    """(``start`` or ``end``, attempt, when) of each line the command wrote, in order."""
    if not trace.exists():
        return []
    found = []
    for line in trace.read_text().splitlines():
        what, attempt, when = line.split()
        found.append((what, int(attempt), float(when)))
    return found


def logged(proc: VigilProcess, event: str) -> bool:
    return f'"{event}"' in proc.log_path.read_text(errors="replace")


def at(row: dict[str, Any]) -> float:
    return datetime.fromisoformat(row["at"]).timestamp()


@pytest.fixture
def shared(tmp_path: Path, database_url: str, queue_prefix: str, runs_dir: Path) -> dict[str, str]:
    services.need_redis()
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": services.REDIS_URL,
        "VIGIL_QUEUE_PREFIX": queue_prefix,
        "VIGIL_DB_POOL_SIZE": "4",
        "VIGIL_REMEDIATIONS_FILE": str(write_remediations(tmp_path, runs_dir / TARGET)),
    }


@pytest.fixture
def cluster(procs: Processes, shared: dict[str, str]) -> Iterator[Processes]:
    yield procs
    # Stop the processes here, before the database and the queue prefix they use go away.
    procs.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_attempt_left_running_by_a_killed_remediator_is_not_run_beside_the_next(
    cluster: Processes, shared: dict[str, str], runs_dir: Path
) -> None:
    procs = cluster
    trace = runs_dir / TARGET
    port = free_port()
    remediator = procs.start(
        "remediator-1", ["remediator", "--port", str(port)], port=port, env=shared, wait=False
    )
    api_proc = procs.serve(no_worker=True, env=shared, wait=False)
    worker_env = {**shared, "VIGIL_REMEDIATOR_URL": remediator.url}
    first_worker = procs.worker("worker-1", env=worker_env, wait=False)
    procs.wait_healthy(remediator, api_proc, first_worker)
    api = Api(api_proc.url, procs)
    try:
        action_id = api.create(TARGET)

        def story() -> str:
            return f"action {action_id}: {transitions(api.history(action_id))}; runs {runs(trace)}"

        wait_for(lambda: runs(trace), timeout=15, what="attempt 1 to start", procs=procs)
        remediator.signal(signal.SIGKILL)
        assert remediator.wait(timeout=5) == -signal.SIGKILL

        # The worker's request went unanswered and the remediator now refuses connections:
        # the command may still be running, so the worker keeps attempt 1.
        wait_for(
            lambda: logged(first_worker, "remediator.unreachable_keeping_attempt"),
            timeout=10,
            what=story,
            procs=procs,
        )
        action = api.action(action_id)
        assert (action["status"], action["attempts"]) == ("running", 1), story()

        # The worker dies too; another takes over the attempt once the lease expires, and
        # cannot reach the remediator either: it knows from the history that attempt 1 may
        # be running, so it keeps it.
        first_worker.signal(signal.SIGKILL)
        assert first_worker.wait(timeout=5) == -signal.SIGKILL
        second_worker = procs.worker("worker-2", env=worker_env)
        wait_for(
            lambda: logged(second_worker, "task.rerun_unconfirmed"),
            timeout=15,
            what=story,
            procs=procs,
        )
        assert [row["attempt"] for row in api.history(action_id) if row["to"] == "running"] == [
            1,
            1,
        ], story()

        # The remediator is back: it answers attempt 1 from its record (still running, then,
        # past its deadline, interrupted), and attempt 2 runs.
        procs.start("remediator-2", ["remediator", "--port", str(port)], port=port, env=shared)
        action = api.wait_status(
            action_id, "completed", "failed", timeout=TIMEOUT + EXPIRY_GRACE_SECONDS + 30
        )
        assert (action["status"], action["attempts"]) == ("completed", 2), story()

        done = runs(trace)
        assert [(what, attempt) for what, attempt, _ in done] == [
            ("start", 1),
            ("end", 1),  # the command outlived the remediator that started it
            ("start", 2),
            ("end", 2),
        ], story()
        started_1, ended_1, started_2 = done[0][2], done[1][2], done[2][2]
        assert started_2 >= ended_1, "attempt 2 ran beside attempt 1"
        assert started_2 >= started_1 + TIMEOUT + EXPIRY_GRACE_SECONDS, (
            f"attempt 2 started {started_2 - started_1:.1f}s after attempt 1, before the "
            f"dead run's deadline; {story()}"
        )

        history = api.history(action_id)
        interrupted = [r for r in history if r["from"] == "running" and r["to"] == "pending"]
        assert "expired" in interrupted[0]["reason"], story()
        assert "interrupted" in interrupted[1]["reason"], story()
        [claim_2] = [r for r in history if r["to"] == "running" and r["attempt"] == 2]
        assert at(claim_2) >= started_1 + TIMEOUT + EXPIRY_GRACE_SECONDS, story()
    finally:
        api.close()
