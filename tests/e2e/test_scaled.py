"""The scaled-out shape end to end: separate API, worker and remediator processes on Redis,
on SQLite and on PostgreSQL (every process shares the one DATABASE_URL).

What these pin, with real processes killed and real Redis data lost (docs/design.md invariants
1, 3 and 7): every action completes, and its command runs exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests import services
from tests.e2e.cluster import Cluster, start_cluster
from tests.e2e.procs import Processes, wait_for
from tests.e2e.vigil_api import runs, transitions


@pytest.fixture
def shared_redis() -> str:
    services.need_redis()
    return services.REDIS_URL


@pytest.fixture
def cluster_factory(procs: Processes, database_url: str, queue_prefix: str) -> Iterator[Any]:
    clusters: list[Cluster] = []

    def make(*, redis_url: str, workers: int) -> Cluster:
        cluster = start_cluster(
            procs,
            database_url=database_url,
            redis_url=redis_url,
            queue_prefix=queue_prefix,
            workers=workers,
        )
        clusters.append(cluster)
        return cluster

    yield make
    # Stop the processes here, before the database and the queue prefix they use go away.
    procs.stop_all()
    for cluster in clusters:
        cluster.api.close()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_actions_spread_over_two_workers_each_run_once(
    cluster_factory: Any, shared_redis: str, runs_dir: Any
) -> None:
    cluster: Cluster = cluster_factory(redis_url=shared_redis, workers=2)
    api = cluster.api
    targets = [f"web-{i}" for i in range(20)]
    ids = {target: api.create(target) for target in targets}

    def all_done() -> bool:
        return all(api.action(i)["status"] in ("completed", "failed") for i in ids.values())

    wait_for(all_done, timeout=20, what="20 actions to finish", procs=cluster.procs)
    for target, action_id in ids.items():
        action = api.action(action_id)
        assert action["status"] == "completed", (action, transitions(api.history(action_id)))
        assert action["attempts"] == 1, action
        assert runs(runs_dir, target) == [1], (target, transitions(api.history(action_id)))

    # A reconciler may have re-sent an action that waited long for a worker (its dispatch
    # older than the 1 s visibility timeout): such a copy is discarded, soon.
    stats = wait_for(
        lambda: (s := api.stats())["queue_length"] == 0 and s,
        timeout=5,
        what="the queue to empty",
        procs=cluster.procs,
    )
    assert stats["backend"] == "redis"
    # A copy settled first (discarded: its action was done) leaves the worker that ran the
    # action nothing to settle, so each delivery beyond the 20 may take one off the count.
    redelivered = stats["tasks_dequeued"] - 20
    assert redelivered >= 0, stats
    assert stats["tasks_completed"] >= 20 - redelivered, stats
    assert stats["dead_letter_length"] == 0, stats

    # Both workers count what they did in their own /metrics.
    done = 0
    for worker in cluster.workers:
        text = httpx.get(f"{worker.url}/metrics", timeout=5).text
        assert "vigil_tasks_total" in text
        for line in text.splitlines():
            if line.startswith('vigil_tasks_total{result="completed"}'):
                done += int(float(line.split()[-1]))
    assert done == 20


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_worker_killed_mid_action_is_reclaimed_and_the_command_runs_once(
    cluster_factory: Any, shared_redis: str, runs_dir: Any
) -> None:
    cluster: Cluster = cluster_factory(redis_url=shared_redis, workers=2)
    api = cluster.api
    action_id = api.create("slow-1")  # its command sleeps 2 s at the remediator

    # The command has started at the remediator: kill the worker waiting for it.
    wait_for(
        lambda: runs(runs_dir, "slow-1"),
        timeout=10,
        what="the command to start",
        procs=cluster.procs,
    )
    claimed_by = transitions(api.history(action_id))
    running = [row for row in api.history(action_id) if row["to"] == "running"]
    assert len(running) == 1, claimed_by
    victim = cluster.worker_by_name(running[0]["actor"])
    victim.signal(signal.SIGKILL)
    assert victim.wait(timeout=5) == -signal.SIGKILL

    action = api.wait_status(action_id, "completed", "failed", timeout=15)
    assert action["status"] == "completed", (action, transitions(api.history(action_id)))
    assert action["attempts"] == 1
    assert runs(runs_dir, "slow-1") == [1]  # the remediator answered the reclaim from its record

    history = api.history(action_id)
    assert transitions(history) == [
        (None, "pending", 0),
        ("pending", "running", 1),
        ("running", "pending", 1),  # the lease expired: reclaimed with the same attempt
        ("pending", "running", 1),
        ("running", "completed", 1),
    ], history
    assert "expired" in (history[2]["reason"] or ""), history
    survivor = next(w for w in cluster.workers if w is not victim)
    assert history[3]["actor"].split(":")[1] == str(survivor.pid), history


@pytest.mark.timeout(60)
def test_an_action_survives_redis_losing_its_data(cluster_factory: Any, runs_dir: Any) -> None:
    with services.own_redis_server() as redis_url:
        cluster: Cluster = cluster_factory(redis_url=redis_url, workers=0)
        api = cluster.api
        action_id = api.create("web-flushed")
        assert api.stats()["queue_length"] == 1

        client = redis.Redis.from_url(redis_url)
        try:
            client.flushall()
        finally:
            client.close()
        assert api.stats()["queue_length"] == 0
        assert api.action(action_id)["status"] == "pending"

        cluster.add_workers(1)
        action = api.wait_status(action_id, "completed", "failed", timeout=15)
        assert action["status"] == "completed", (action, transitions(api.history(action_id)))
        assert action["attempts"] == 1
        assert runs(runs_dir, "web-flushed") == [1]
        assert transitions(api.history(action_id)) == [
            (None, "pending", 0),
            ("pending", "running", 1),
            ("running", "completed", 1),
        ]

        # Again while the worker waits on the stream: it recreates the group and goes on.
        client = redis.Redis.from_url(redis_url)
        try:
            client.flushall()
        finally:
            client.close()
        second = api.create("web-flushed-again")
        action = api.wait_status(second, "completed", "failed", timeout=15)
        assert action["status"] == "completed", (action, transitions(api.history(second)))
        assert runs(runs_dir, "web-flushed-again") == [1]


@pytest.mark.timeout(60)
def test_sigterm_lets_the_running_action_finish_before_the_worker_exits(
    cluster_factory: Any, shared_redis: str, runs_dir: Any
) -> None:
    cluster: Cluster = cluster_factory(redis_url=shared_redis, workers=1)
    api = cluster.api
    (worker,) = cluster.workers
    action_id = api.create("brief-1")  # its command sleeps 1 s
    wait_for(
        lambda: runs(runs_dir, "brief-1"),
        timeout=10,
        what="the command to start",
        procs=cluster.procs,
    )

    assert api.action(action_id)["status"] == "running"
    worker.signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "the worker did not exit within 15 s of SIGTERM" + cluster.procs.tails()
        ) from None
    assert code == 0, cluster.procs.tails()
    action = api.action(action_id)
    assert action["status"] == "completed", (
        action,
        transitions(api.history(action_id)),
        cluster.procs.tails(),
    )
    assert runs(runs_dir, "brief-1") == [1]


@pytest.mark.timeout(60)
def test_one_request_id_follows_an_ingest_to_the_remediator(
    cluster_factory: Any, shared_redis: str, runs_dir: Any
) -> None:
    cluster: Cluster = cluster_factory(redis_url=shared_redis, workers=1)
    api = cluster.api
    api.create_policy(
        {
            "name": "trace-cpu",
            "target": "trace-*",
            "auto_remediate": True,
            "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
            "action": "scale-up",
        }
    )
    request_id = "trace-6f1c2b9e4d7a"
    response = httpx.post(
        f"{api.url}/api/v1/ingest",
        json={"name": "cpu", "value": 99, "target": "trace-01"},
        headers={"X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == request_id
    [action] = response.json()["actions"]
    api.wait_status(action["action_id"], "completed")
    generated = httpx.get(f"{api.url}/health", timeout=5).headers["x-request-id"]
    assert generated
    assert generated != request_id

    def lines_of(proc: Any) -> list[dict[str, Any]]:
        text = proc.log_path.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    api_proc = next(p for p in cluster.procs.started if p.name == "api")
    for proc in (api_proc, cluster.workers[0], cluster.remediator):
        lines = lines_of(proc)
        assert lines, proc.tail()
        story = [line for line in lines if line.get("request_id") == request_id]
        assert story, f"{proc.name} logged nothing with the request id:\n{proc.tail()}"
        assert all("event" in line and "level" in line for line in lines)
        text = proc.log_path.read_text(errors="replace")
        assert cluster.procs.base_env["VIGIL_REMEDIATOR_SECRET"] not in text
