"""PostgreSQL stopped under load: the scaled shape (API, worker and remediator processes)
and the embedded one (one ``vigil serve``) on a private PostgreSQL server, which the test
crashes (``pg_ctl stop -m immediate``) while agents keep sending metrics, some of them
violating a policy, and actions run; then it starts the server again.

What this pins: no process answers 500; every 503 says when to retry (``Retry-After``);
no action stays ``running`` past its lease; every acknowledged sample is stored; and every
request retried with its ``Idempotency-Key`` -- after a 503, a lost connection, or an
answer treated as lost -- is stored exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from tests import services
from tests.e2e.cluster import start_cluster
from tests.e2e.procs import Processes, wait_for
from tests.e2e.vigil_api import SCALE_UP, Api, runs, transitions

pytestmark = pytest.mark.slow

POLICY = {
    "name": "cpu-hot",
    "severity": "warning",
    "target": "all",
    "auto_remediate": True,
    "condition": {"type": "metric_exceeds", "metric": "cpu", "threshold": 90},
    "action": SCALE_UP,
    "cooldown_seconds": 0,
}
SENDERS = 3
LEASE_SLACK_SECONDS = 3.0
"""How long past its lease a running action may stay before the reconciler must have
reclaimed it (the test's lease is 1 s, the reconciler runs every 0.2 s)."""


@dataclass
class Sent:
    """One ingest request and every answer it got (a status code, or the transport error)."""

    key: str
    path: str
    body: dict[str, Any]
    values: list[float]
    answers: list[int | str] = field(default_factory=list)
    first_201: bytes | None = None

    @property
    def acknowledged(self) -> bool:
        return self.first_201 is not None


class Load:
    """Agents sending metrics from threads, each request with its own Idempotency-Key;
    one request in twenty carries a violating sample, of a target of its own (so each
    stored one makes an action)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[Sent] = []
        self.refusals: list[str] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(SENDERS)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def count(self, answer: int | str) -> int:
        with self._lock:
            return sum(a == answer for s in self.sent for a in s.answers)

    def acknowledged(self) -> int:
        with self._lock:
            return sum(s.acknowledged for s in self.sent)

    def _next(self) -> Sent:
        n = next(self._numbers)
        samples: list[dict[str, Any]] = []
        for part in range(3 if n % 4 == 0 else 1):
            value = float(n * 10 + part)
            if n % 20 == 0 and part == 0:
                samples.append({"name": "cpu", "value": 1000 + value, "target": f"hot-{n}"})
            else:
                samples.append({"name": "load", "value": value, "target": f"web-{n % 8}"})
        if len(samples) > 1:
            body: dict[str, Any] = {"metrics": samples}
            path = "/api/v1/ingest/batch"
        else:
            body = samples[0]
            path = "/api/v1/ingest"
        return Sent(f"load-{n}", path, body, [s["value"] for s in samples])

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set():
                sent = self._next()
                with self._lock:
                    self.sent.append(sent)
                self.send(client, sent)
                self._stop.wait(0.01)

    def send(self, client: httpx.Client, sent: Sent) -> int | str:
        """Send ``sent`` once; the status code or the transport error's name."""
        try:
            r = client.post(sent.path, json=sent.body, headers={"Idempotency-Key": sent.key})
        except httpx.TransportError as exc:
            answer: int | str = type(exc).__name__
        else:
            answer = r.status_code
            if answer in (429, 503) and not r.headers.get("retry-after", "").isdigit():
                self.refusals.append(f"{sent.key}: {answer} without Retry-After")
            if answer == 201 and sent.first_201 is None:
                sent.first_201 = r.content
            elif answer == 201 and r.content != sent.first_201:
                self.refusals.append(f"{sent.key}: a retry was answered differently")
            elif answer not in (201, 503):
                self.refusals.append(f"{sent.key}: {answer} {r.text}")
        with self._lock:
            sent.answers.append(answer)
        return answer


def _samples(sent: Sent) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = sent.body.get("metrics", [sent.body])
    return metrics


@pytest.fixture
def private_postgres() -> Iterator[services.PrivatePostgres]:
    with services.own_postgres_server() as server:
        yield server


@pytest.fixture(params=["scaled", "embedded"])
def api(
    request: pytest.FixtureRequest,
    procs: Processes,
    private_postgres: services.PrivatePostgres,
    queue_prefix: str,
) -> Iterator[Api]:
    """The scaled shape (API, worker and remediator processes on Redis) or the embedded one
    (one ``vigil serve``), on the private server."""
    procs.base_env["VIGIL_ACCESS_LOG"] = "true"  # every answer, for the 5xx check
    procs.base_env["VIGIL_RUNNER_INTERVAL_SECONDS"] = "0.5"
    if request.param == "scaled":
        services.need_redis()
        client = start_cluster(
            procs,
            database_url=private_postgres.url,
            redis_url=services.REDIS_URL,
            queue_prefix=queue_prefix,
            workers=1,
        ).api
    else:
        client = Api(procs.serve(env={"DATABASE_URL": private_postgres.url}).url, procs)
    yield client
    procs.stop_all()  # before the server and the queue prefix go away
    client.close()


def _query(url: str, sql: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def _overdue_running(url: str) -> list[Any]:
    """Actions still running well past their lease (the reconciler should have taken them)."""
    return _query(
        url,
        "SELECT id, target, attempts, lease_expires_at FROM actions WHERE status = 'running' "
        f"AND lease_expires_at < now() - interval '{LEASE_SLACK_SECONDS} seconds'",
    )


_SERVER_ERROR = re.compile(r'HTTP/1\.1\\?" 5(?!03)\d\d')
_UNEXPECTED = ("MissingGreenlet", "task.failed_unexpectedly", "request.database_error")


@pytest.mark.timeout(120)
def test_stopping_postgresql_under_load_loses_nothing_acknowledged(
    api: Api, private_postgres: services.PrivatePostgres, runs_dir: Any
) -> None:
    procs = api.procs
    api.create_policy(POLICY)
    with Load(api.url) as load:
        wait_for(lambda: load.acknowledged() >= 40, timeout=20, what="load to flow", procs=procs)
        # Actions whose command runs for a second: the outage comes while they run.
        running = [api.create(f"brief-{i}") for i in range(3)]
        for action_id in running:
            api.wait_status(action_id, "running")
        private_postgres.stop("immediate")
        refused_before = load.count(503)
        # The outage, under load, for a few seconds: until many requests met it.
        outage_started = time.monotonic()
        wait_for(
            lambda: (
                load.count(503) >= refused_before + 60 and time.monotonic() - outage_started >= 3
            ),
            timeout=20,
            what="requests to meet the outage",
            procs=procs,
        )
        private_postgres.start()
        back = load.acknowledged()
        wait_for(
            lambda: load.acknowledged() >= back + 40,
            timeout=20,
            what="ingest to recover",
            procs=procs,
        )
    assert not load.refusals, load.refusals[:10]

    # Every request not acknowledged is retried with its key until it is; a few that were
    # acknowledged are sent again too, as if their answers had been lost.
    with httpx.Client(base_url=api.url, timeout=5) as client:
        unanswered = [s for s in load.sent if not s.acknowledged]
        for sent in unanswered:

            def is_stored(sent: Sent = sent) -> bool:
                return load.send(client, sent) == 201

            wait_for(
                is_stored,
                timeout=15,
                interval=0.2,
                what=f"{sent.key} to be stored on retry",
                procs=procs,
            )
        resent = [s for s in load.sent if len(s.answers) == 1][::5]
        for sent in resent:
            assert load.send(client, sent) == 201
    assert not load.refusals, load.refusals[:10]
    assert unanswered, "the outage refused some requests"
    assert any(s.answers[0] == 503 for s in unanswered)

    # Every sample of every request is stored exactly once.
    stored = Counter(
        row["value"] for row in _query(private_postgres.url, "SELECT value FROM metrics")
    )
    expected = Counter(v for s in load.sent for v in s.values)
    assert stored == expected, (
        f"{sum((stored - expected).values())} stored twice, "
        f"{sum((expected - stored).values())} lost"
    )

    # Every action completes, none stays running past its lease meanwhile, and no attempt
    # ran twice.
    def settled() -> bool:
        overdue = _overdue_running(private_postgres.url)
        assert not overdue, overdue
        found = api.actions()
        return bool(found) and all(a["status"] == "completed" for a in found)

    wait_for(settled, timeout=30, interval=0.2, what="every action to complete", procs=procs)
    actions = api.actions()
    hot = {s["target"] for sent in load.sent for s in _samples(sent) if s["name"] == "cpu"}
    assert {a["target"] for a in actions if a["policy_name"] == POLICY["name"]} == hot
    assert {a["id"] for a in actions} >= set(running)
    for action in actions:
        attempts = runs(runs_dir, action["target"])
        assert len(attempts) == len(set(attempts)), (
            action,
            attempts,
            transitions(api.history(action["id"])),
        )

    # No process answered 500 or met an error it could not place.
    for proc in procs.started:
        text = proc.log_path.read_text(errors="replace")
        assert not _SERVER_ERROR.search(text), f"{proc.name} answered 5xx" + procs.tails()
        for marker in _UNEXPECTED:
            assert marker not in text, f"{proc.name} logged {marker}" + procs.tails()
