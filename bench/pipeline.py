"""Remediation pipeline benchmark: violations in, completed actions out, through real processes.

Each violating ingest (``POST /api/v1/ingest`` of ``bench_pressure`` = 99 on a target never
used before) records one pending action through the bench's own policy (``target: "*"``,
``auto_remediate``, action ``scale-up``, which the packaged remediations map to the ``log``
plugin, a dry run); the Dispatcher enqueues it, a worker claims it, runs it and marks it
``completed``. Measured per deployment shape (``--shape``):

- ``embedded``  one ``vigil serve`` on a fresh SQLite file, its in-process queue and worker;
- ``scaled``    a fresh PostgreSQL database (``vigil_bench_<random>``, dropped afterwards),
                Redis Streams under a unique ``VIGIL_QUEUE_PREFIX`` (its keys deleted
                afterwards), ``vigil serve --no-worker``, 2 ``vigil worker`` processes and
                one ``vigil remediator`` they call over signed HTTP.

And in each shape, in this order:

1. **baseline**: the same processes but no worker (``vigil serve --no-worker``, no
   ``vigil worker``), fresh database: the rate at which ``--concurrency`` client threads
   create ``--actions`` actions by violating ingests, one target each. The same-run yardstick.
2. **pipeline**: with the workers, fresh database, after a short warm-up: the same load;
   the time from the first request until ``GET /api/v1/actions?status=completed`` counts every
   action (polled every 50 ms): actions/s through the whole pipeline, ingest and work
   competing for the same machine, as in production.
3. **drain**: on the same processes, one ``POST /api/v1/ingest/batch`` of ``--actions``
   violations records them all in one transaction; the span from the first ``started_at``
   to the last ``completed_at`` of those actions (Vigil's timestamps) is the workers'
   own rate, with no ingest load beside them.
4. **latency**: ``--latency-samples`` violations one after the other (the next sent once the
   previous action is completed), on the same processes. Per action: *server* latency =
   ``completed_at - created_at`` (both stamped by Vigil, from the API), split into queue
   (``started_at - created_at``: dispatch, queue, claim) and run (``completed_at -
   started_at``: the remediation and recording it); *client* latency = from just before
   sending the ingest to receiving the first ``GET /api/v1/actions/{id}`` answer showing
   ``completed`` (polled every ``--poll-ms``, so it is late by up to that much).

The CPU used by Vigil's processes (from /proc) and the machine's busy share are printed for
each run, so a run starved by other work on the machine shows as such. Percentiles are
nearest-rank. Everything runs on 127.0.0.1; every process has a time limit
and is stopped at the end, Ctrl-C included.

Run: ``.venv/bin/python bench/pipeline.py`` (or ``make bench-pipeline``); ``--help`` for the
flags. The scaled shape needs Redis on 127.0.0.1:6379 and PostgreSQL on
postgresql://root@127.0.0.1:5432 (``--redis-url``, ``--postgres-url``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# bench/ingest.py's process helpers (this directory is on sys.path when run as a script).
from ingest import Server, free_port, running
from ingest import http as request_json
from vigil.local import clean_env

METRIC = "bench_pressure"
THRESHOLD = 90.0
ACTION = "scale-up"
WORKERS = 2  # vigil worker processes in the scaled shape
COMPLETED = "/api/v1/actions?status=completed&limit=1"


def policy_file(path: Path, cooldown: float) -> None:
    """One policy every bench ingest violates (JSON is YAML)."""
    policy = {
        "name": "bench-pipeline",
        "description": "benchmark: every sample above the threshold is a violation",
        "severity": "warning",
        "target": "*",
        "enabled": True,
        "auto_remediate": True,
        "condition": {"type": "metric_exceeds", "metric": METRIC, "threshold": THRESHOLD},
        "action": ACTION,
        "params": {"replicas": 2},
        "cooldown_seconds": cooldown,
    }
    path.write_text(json.dumps({"policies": [policy]}, indent=1))


def violation(target: str) -> bytes:
    return json.dumps(
        {"name": METRIC, "value": 99.0, "target": target, "tags": {"bench": "pipeline"}}
    ).encode()


# --- a keep-alive client ---------------------------------------------------------------------


class Client:
    """One HTTP/1.1 keep-alive connection to a server on 127.0.0.1 (one per thread)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self._port = port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self._port, self._timeout)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                return response.status, json.loads(data or b"null")
            except (ConnectionError, http.client.HTTPException):
                # The server closed an idle keep-alive connection: reconnect once.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def ingest_one(client: Client, target: str) -> int:
    """Send one violation; the id of the action it recorded."""
    status, answer = client.request("POST", "/api/v1/ingest", violation(target))
    actions = answer.get("actions") if isinstance(answer, dict) else None
    if status != 201 or not actions or len(actions) != 1:
        raise RuntimeError(f"ingest on {target} answered {status}: {answer}")
    return int(actions[0]["action_id"])


def action_total(client: Client, status: str) -> int:
    code, answer = client.request("GET", f"/api/v1/actions?status={status}&limit=1")
    if code != 200:
        raise RuntimeError(f"GET actions?status={status} answered {code}: {answer}")
    return int(answer["total"])


# --- the loads -----------------------------------------------------------------------------


@dataclass
class Created:
    """A burst of violations: ``count`` actions created in ``seconds`` by the clients."""

    count: int
    seconds: float
    ids: list[int]

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def create_actions(port: int, prefix: str, count: int, concurrency: int) -> Created:
    """``count`` violations on targets ``{prefix}-NNNNNN``, ``concurrency`` threads at once."""
    numbers = itertools.count()
    lock = threading.Lock()
    ids: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        client = Client(port)
        try:
            while not errors:
                with lock:
                    n = next(numbers)
                if n >= count:
                    return
                action_id = ingest_one(client, f"{prefix}-{n:06d}")
                with lock:
                    ids.append(action_id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"the load failed: {errors[0]!r}") from errors[0]
    return Created(count=len(ids), seconds=seconds, ids=ids)


@dataclass
class Usage:
    """CPU used during a phase: Vigil's processes (in cores) and the whole machine (busy share)."""

    vigil_cores: float = 0.0
    machine_busy: float = 0.0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat; (0, 0) elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc; 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def measuring(pids: list[int]) -> Iterator[Usage]:
    usage = Usage()
    cpu = sum(process_seconds(pid) for pid in pids)
    busy, total = machine_ticks()
    started = time.perf_counter()
    try:
        yield usage
    finally:
        wall = time.perf_counter() - started
        busy_after, total_after = machine_ticks()
        usage.vigil_cores = (sum(process_seconds(pid) for pid in pids) - cpu) / wall
        if total_after > total:
            usage.machine_busy = (busy_after - busy) / (total_after - total)


@dataclass
class Pipeline:
    """Actions created and followed to completion."""

    created: Created
    seconds: float  # from the first request until every action is completed
    usage: Usage

    @property
    def per_s(self) -> float:
        return self.created.count / self.seconds if self.seconds else 0.0


def wait_completed(
    client: Client, expected: int, timeout: float, alive: Callable[[], None]
) -> float:
    """Poll until ``expected`` actions are completed; perf_counter() of the first poll seeing it."""
    deadline = time.monotonic() + timeout
    while True:
        done = action_total(client, "completed")
        now = time.perf_counter()
        if done >= expected:
            return now
        failed = action_total(client, "failed")
        if failed:
            raise RuntimeError(f"{failed} actions failed (expected none)")
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {expected} actions completed within {timeout:g}s")
        time.sleep(0.05)


def run_pipeline(
    deployment: Deployment, prefix: str, count: int, concurrency: int, already: int, timeout: float
) -> Pipeline:
    """``count`` single violating ingests from ``concurrency`` threads, until all completed."""
    port = deployment.api.port
    poller = Client(port)
    try:
        with measuring(deployment.pids) as usage:
            started = time.perf_counter()
            created = create_actions(port, prefix, count, concurrency)
            done = wait_completed(poller, already + count, timeout, deployment.alive)
    finally:
        poller.close()
    return Pipeline(created=created, seconds=done - started, usage=usage)


def run_drain(
    deployment: Deployment, prefix: str, count: int, already: int, timeout: float
) -> Pipeline:
    """``count`` actions created at once by one batch ingest, then worked off: the worker alone.

    ``seconds`` is set here from the batch's answer to the last completion seen, and replaced
    by :func:`worker_span` once the actions' timestamps are read (the workers start on the
    first actions while the batch's answer is still being made); ``created.seconds`` is the
    batch request's own time.
    """
    body = json.dumps(
        {
            "metrics": [
                {"name": METRIC, "value": 99.0, "target": f"{prefix}-{n:06d}"} for n in range(count)
            ]
        }
    ).encode()
    client = Client(deployment.api.port, timeout=timeout)
    try:
        with measuring(deployment.pids) as usage:
            sent = time.perf_counter()
            status, answer = client.request("POST", "/api/v1/ingest/batch", body)
            answered = time.perf_counter()
            actions = answer.get("actions") if isinstance(answer, dict) else None
            if status != 201 or actions is None or len(actions) != count:
                found = len(actions) if actions is not None else answer
                raise RuntimeError(f"batch of {count} violations answered {status}: {found}")
            done = wait_completed(client, already + count, timeout, deployment.alive)
    finally:
        client.close()
    created = Created(
        count=count, seconds=answered - sent, ids=[int(a["action_id"]) for a in actions]
    )
    return Pipeline(created=created, seconds=done - answered, usage=usage)


@dataclass
class Latency:
    client_ms: list[float] = field(default_factory=list)
    ingest_ms: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


def worker_span(ids: list[int], actions: dict[int, dict[str, Any]]) -> float:
    """Seconds from the first claim (``started_at``) to the last ``completed_at`` of ``ids``."""
    started = min(_ts(actions[i]["started_at"]) for i in ids)
    completed = max(_ts(actions[i]["completed_at"]) for i in ids)
    return (completed - started).total_seconds()


def run_latency(
    port: int, prefix: str, samples: int, poll_s: float, timeout: float, alive: Any
) -> Latency:
    """Violations one after the other; each followed by polling its action until completed."""
    client = Client(port)
    out = Latency()
    try:
        for n in range(samples):
            started = time.perf_counter()
            action_id = ingest_one(client, f"{prefix}-{n:06d}")
            answered = time.perf_counter()
            deadline = time.monotonic() + timeout
            while True:
                status, answer = client.request("GET", f"/api/v1/actions/{action_id}")
                if status != 200:
                    raise RuntimeError(f"GET action {action_id} answered {status}: {answer}")
                if answer["status"] == "completed":
                    break
                if answer["status"] not in ("pending", "running"):
                    raise RuntimeError(f"action {action_id} ended {answer['status']}: {answer}")
                if time.monotonic() > deadline:
                    alive()
                    raise RuntimeError(f"action {action_id} not completed within {timeout:g}s")
                time.sleep(poll_s)
            out.client_ms.append((time.perf_counter() - started) * 1000)
            out.ingest_ms.append((answered - started) * 1000)
            out.ids.append(action_id)
    finally:
        client.close()
    return out


def completed_actions(port: int) -> dict[int, dict[str, Any]]:
    """Every completed action, by id (read page by page)."""
    client = Client(port)
    found: dict[int, dict[str, Any]] = {}
    try:
        for page in itertools.count(1):
            status, answer = client.request(
                "GET", f"/api/v1/actions?status=completed&limit=500&page={page}"
            )
            if status != 200:
                raise RuntimeError(f"GET actions page {page} answered {status}: {answer}")
            for action in answer["actions"]:
                found[int(action["id"])] = action
            if answer["count"] < 500:
                return found
    finally:
        client.close()
    return found


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def server_ms(action: dict[str, Any]) -> tuple[float, float, float]:
    """(created → completed, created → started, started → completed) in ms."""
    created, started, completed = (
        _ts(action[k]) for k in ("created_at", "started_at", "completed_at")
    )
    return (
        (completed - created).total_seconds() * 1000,
        (started - created).total_seconds() * 1000,
        (completed - started).total_seconds() * 1000,
    )


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


# --- the shapes ---------------------------------------------------------------------------


@dataclass
class Deployment:
    """The processes of one shape in one phase; ``api`` takes the load."""

    api: Server
    others: list[Server]
    database: str

    @property
    def pids(self) -> list[int]:
        return [server.process.pid for server in (self.api, *self.others)]

    def alive(self) -> None:
        for server in [self.api, *self.others]:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
                )


class Postgres:
    """Fresh databases on a PostgreSQL server (created and dropped with asyncpg)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def _execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(f"{self.url}/postgres", timeout=10)
        try:
            await conn.execute(sql, timeout=60)
        finally:
            await conn.close()

    def create(self, name: str) -> str:
        asyncio.run(self._execute(f'CREATE DATABASE "{name}"'))
        return f"{self.url}/{name}"

    def drop(self, name: str) -> None:
        asyncio.run(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete every key under ``prefix:`` (the queue's keys, QueueKeys.pattern)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    cleanups: list[str] = field(default_factory=list)

    def base_env(self) -> dict[str, str]:
        env = clean_env()
        env.update(
            {
                "VIGIL_HOST": "127.0.0.1",
                "VIGIL_LOG_LEVEL": self.args.log_level,
                "VIGIL_POLICIES_FILE": str(self.workdir / "policies.yaml"),
            }
        )
        if self.args.worker_concurrency:
            env["VIGIL_WORKER_CONCURRENCY"] = str(self.args.worker_concurrency)
        env.update(item.split("=", 1) for item in self.args.env)
        return env

    def start(
        self, stack: contextlib.ExitStack, shape: str, phase: str, *, workers: bool
    ) -> Deployment:
        """Start ``shape`` on a fresh database; stopped (and cleaned up) with ``stack``."""
        phase_dir = self.workdir / f"{shape}-{phase}"
        phase_dir.mkdir()
        env = self.base_env()
        python = sys.executable
        timeout = self.args.start_timeout
        port = free_port()
        env["VIGIL_PORT"] = str(port)
        if shape == "embedded":
            database = f"sqlite:///{phase_dir / 'vigil.db'}"
            env["DATABASE_URL"] = database
            argv = [python, "-m", "vigil", "serve"] + ([] if workers else ["--no-worker"])
            api = stack.enter_context(running("serve", argv, env, port, phase_dir, timeout))
            return Deployment(api=api, others=[], database="SQLite (fresh temp file)")

        postgres = Postgres(self.args.postgres_url)
        name = f"vigil_bench_{self.run_id}_{phase}"
        env["DATABASE_URL"] = postgres.create(name)
        stack.callback(self._cleanup, f"dropped database {name}", postgres.drop, name)
        prefix = f"vigil-bench-{self.run_id}-{phase}"
        env["REDIS_URL"] = self.args.redis_url
        env["VIGIL_QUEUE_PREFIX"] = prefix
        stack.callback(
            self._cleanup,
            f"deleted Redis keys {prefix}:*",
            delete_redis_keys,
            env["REDIS_URL"],
            prefix,
        )
        api = stack.enter_context(
            running(
                "serve",
                [python, "-m", "vigil", "serve", "--no-worker"],
                env,
                port,
                phase_dir,
                timeout,
            )
        )
        others: list[Server] = []
        if workers:
            secret = secrets.token_hex(16)
            remediator_port = free_port()
            remediator_env = {
                **env,
                "VIGIL_REMEDIATOR_SECRET": secret,
                "VIGIL_REMEDIATOR_PORT": str(remediator_port),
            }
            others.append(
                stack.enter_context(
                    running(
                        "remediator",
                        [python, "-m", "vigil", "remediator"],
                        remediator_env,
                        remediator_port,
                        phase_dir,
                        timeout,
                    )
                )
            )
            for n in range(WORKERS):
                metrics_port = free_port()
                worker_env = {
                    **env,
                    "VIGIL_REMEDIATOR_URL": f"http://127.0.0.1:{remediator_port}",
                    "VIGIL_REMEDIATOR_SECRET": secret,
                    "VIGIL_WORKER_METRICS_PORT": str(metrics_port),
                }
                others.append(
                    stack.enter_context(
                        running(
                            f"worker-{n + 1}",
                            [python, "-m", "vigil", "worker"],
                            worker_env,
                            metrics_port,
                            phase_dir,
                            timeout,
                        )
                    )
                )
        return Deployment(api=api, others=others, database="PostgreSQL (fresh database)")

    def _cleanup(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
            self.cleanups.append(what)
        except Exception as exc:  # report, and go on cleaning up the rest
            print(f"warning: cleanup failed ({what}): {exc!r}", file=sys.stderr)


@dataclass
class ShapeResult:
    shape: str
    database: str
    baseline: Pipeline  # seconds = the creation time: nothing completes
    warmup: Pipeline
    pipeline: Pipeline
    drain: Pipeline
    load_server_ms: list[float]
    latency: Latency
    latency_server: list[tuple[float, float, float]]
    queue: dict[str, Any]
    log_errors: int


def run_shape(bench: Bench, shape: str) -> ShapeResult:
    args = bench.args
    timeout = args.timeout
    prefix = f"{shape[:3]}{bench.run_id}"
    count = args.actions

    print(f"{shape}: baseline, no worker: {count} violating ingests ...", flush=True)
    with contextlib.ExitStack() as phase:
        deployment = bench.start(phase, shape, "base", workers=False)
        with measuring(deployment.pids) as usage:
            created = create_actions(deployment.api.port, f"{prefix}-b", count, args.concurrency)
        baseline = Pipeline(created=created, seconds=created.seconds, usage=usage)
        deployment.alive()
        probe = Client(deployment.api.port)
        try:
            pending = action_total(probe, "pending")
            completed = action_total(probe, "completed")
        finally:
            probe.close()
        if pending != count or completed:
            raise RuntimeError(
                f"baseline: expected {count} pending and none completed, "
                f"got {pending} pending and {completed} completed"
            )

    print(
        f"{shape}: with workers: warm-up, {count} ingests to completion, a batch of {count}, "
        f"{args.latency_samples} one by one ...",
        flush=True,
    )
    with contextlib.ExitStack() as phase:
        deployment = bench.start(phase, shape, "run", workers=True)
        port = deployment.api.port
        done = 0
        warmup = run_pipeline(deployment, f"{prefix}-w", args.warmup, args.concurrency, 0, timeout)
        done += args.warmup
        pipeline = run_pipeline(deployment, f"{prefix}-t", count, args.concurrency, done, timeout)
        done += count
        drain = run_drain(deployment, f"{prefix}-d", count, done, timeout)
        latency = run_latency(
            port,
            f"{prefix}-l",
            args.latency_samples,
            args.poll_ms / 1000,
            timeout,
            deployment.alive,
        )
        deployment.alive()
        actions = completed_actions(port)
        status, queue = request_json("GET", f"{deployment.api.url}/api/v1/queue/stats")
        if status != 200:
            raise RuntimeError(f"queue stats answered {status}: {queue}")
        servers = [deployment.api, *deployment.others]
        database = deployment.database
    log_errors = sum(
        1
        for server in servers
        for line in server.log.read_text(errors="replace").splitlines()
        if " ERROR " in line or line.startswith("ERROR")
    )
    expected = pipeline.created.ids + drain.created.ids + latency.ids
    missing = [i for i in expected if i not in actions]
    if missing:
        raise RuntimeError(f"{len(missing)} actions not listed as completed, e.g. {missing[:5]}")
    drain.seconds = worker_span(drain.created.ids, actions)
    return ShapeResult(
        shape=shape,
        database=database,
        baseline=baseline,
        warmup=warmup,
        pipeline=pipeline,
        drain=drain,
        load_server_ms=[server_ms(actions[i])[0] for i in pipeline.created.ids],
        latency=latency,
        latency_server=[server_ms(actions[i]) for i in latency.ids],
        queue=queue,
        log_errors=log_errors,
    )


# --- the report -----------------------------------------------------------------------------


def report(args: argparse.Namespace, results: list[ShapeResult], elapsed: float) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(
        f"Vigil remediation pipeline benchmark, {when}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {args.actions} actions per run, each on its own target; "
        f"log plugin (dry run); worker concurrency {args.worker_concurrency or 'default (10)'}"
    )
    print()
    print(
        f"throughput, actions/s. ingest only: {args.concurrency} threads of single violating "
        "ingests, no worker (actions created/s);"
    )
    print(
        "pipeline: the same with the workers, first request -> last completion (created/s: "
        "the ingest rate meanwhile);"
    )
    print(
        "drain: one batch ingest records them all; first started_at -> last completed_at "
        "(the workers alone); load p50/p99:"
    )
    print("created_at -> completed_at of the pipeline run's actions (ms, backlog included)")
    header = (
        f"{'shape':9} {'ingest only':>12} {'pipeline':>9} {'ratio':>6} {'created/s':>10} "
        f"{'drain':>7} {'ms/action':>10} {'load p50':>9} {'load p99':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r.pipeline.per_s / r.baseline.per_s if r.baseline.per_s else 0.0
        print(
            f"{r.shape:9} {r.baseline.per_s:>12,.1f} {r.pipeline.per_s:>9,.1f} {ratio:>6.0%} "
            f"{r.pipeline.created.per_s:>10,.1f} {r.drain.per_s:>7,.1f} "
            f"{1000 / r.drain.per_s if r.drain.per_s else 0:>10.2f} "
            f"{percentile(r.load_server_ms, 50):>9,.0f} {percentile(r.load_server_ms, 99):>9,.0f}"
        )
    print()
    print("CPU during each run: Vigil's processes (cores busy) / the whole machine (busy share)")
    for r in results:
        parts = [
            f"{name} {p.usage.vigil_cores:.2f} / {p.usage.machine_busy:.0%}"
            for name, p in (
                ("ingest only", r.baseline),
                ("pipeline", r.pipeline),
                ("drain", r.drain),
            )
        ]
        print(f"{r.shape:9} " + "; ".join(parts))
    print()
    print(
        f"latency, {args.latency_samples} violations one after the other (ms; server = "
        "completed_at - created_at = queue + run, queue ="
    )
    print(
        "started_at - created_at, run = completed_at - started_at; client = send the ingest -> "
        f"a GET shows completed, polled every {args.poll_ms:g} ms; ingest = its round trip)"
    )
    header = (
        f"{'shape':9} {'server p50':>10} {'p99':>7} {'queue p50':>10} {'p99':>7} "
        f"{'run p50':>8} {'p99':>7} {'client p50':>11} {'p99':>7} {'ingest p50':>11} {'p99':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        total = [s[0] for s in r.latency_server]
        queue = [s[1] for s in r.latency_server]
        run = [s[2] for s in r.latency_server]
        cells = [
            f"{percentile(values, 50):>{width}.1f} {percentile(values, 99):>7.1f}"
            for values, width in (
                (total, 10),
                (queue, 10),
                (run, 8),
                (r.latency.client_ms, 11),
                (r.latency.ingest_ms, 11),
            )
        ]
        print(f"{r.shape:9} " + " ".join(cells))
    print()
    for r in results:
        q = r.queue
        print(
            f"{r.shape}: {r.database}; queue {q.get('backend')}: enqueued "
            f"{q.get('tasks_enqueued')}, completed {q.get('tasks_completed')}, retried "
            f"{q.get('tasks_retried')}, failed {q.get('tasks_failed')}, dead letter "
            f"{q.get('dead_letter_length')}; ERROR lines in the logs: {r.log_errors}; "
            f"ingest only {r.baseline.created.count} in {r.baseline.seconds:.2f}s; pipeline "
            f"{r.pipeline.created.count} in {r.pipeline.seconds:.2f}s (created in "
            f"{r.pipeline.created.seconds:.2f}s); drain {r.drain.created.count} in "
            f"{r.drain.seconds:.2f}s (first claim to last completion; the batch took "
            f"{r.drain.created.seconds:.2f}s)"
        )
    print(f"total run time {elapsed:.0f}s")


def to_json(args: argparse.Namespace, results: list[ShapeResult]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "args": vars(args),
        "shapes": {},
    }
    for r in results:
        total = [s[0] for s in r.latency_server]
        out["shapes"][r.shape] = {
            "database": r.database,
            "ingest_only_per_s": r.baseline.per_s,
            "pipeline_per_s": r.pipeline.per_s,
            "created_per_s_during_pipeline": r.pipeline.created.per_s,
            "drain_per_s": r.drain.per_s,
            "usage": {
                name: vars(p.usage)
                for name, p in (
                    ("ingest_only", r.baseline),
                    ("pipeline", r.pipeline),
                    ("drain", r.drain),
                )
            },
            "load_server_ms_p50": percentile(r.load_server_ms, 50),
            "load_server_ms_p99": percentile(r.load_server_ms, 99),
            "latency_server_ms_p50": percentile(total, 50),
            "latency_server_ms_p99": percentile(total, 99),
            "latency_client_ms_p50": percentile(r.latency.client_ms, 50),
            "latency_client_ms_p99": percentile(r.latency.client_ms, 99),
            "queue": r.queue,
            "log_errors": r.log_errors,
        }
    return out


# --- the run --------------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM, turned into an exception so the clean-up runs."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Interrupted("SIGTERM")


def run(args: argparse.Namespace) -> int:
    shapes = ["embedded", "scaled"] if args.shape == "both" else [args.shape]
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-pipeline-"))
    policy_file(workdir / "policies.yaml", args.cooldown)
    signal.signal(signal.SIGTERM, _on_sigterm)
    results: list[ShapeResult] = []
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    bench = Bench(args=args, workdir=workdir)
    try:
        for shape in shapes:
            results.append(run_shape(bench, shape))
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; everything started was stopped and cleaned up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # The phases' stacks stop their processes on the way out; this is what is left.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if bench.cleanups:
            print(f"cleaned up: {'; '.join(bench.cleanups)}")
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    report(args, results, time.monotonic() - started)
    print(
        f"load average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f} "
        "(other work on the machine makes the figures noisy)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(args, results), indent=2, default=str))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--shape", choices=("embedded", "scaled", "both"), default="both", help="what to run"
    )
    parser.add_argument("--actions", type=int, default=None, help="actions per burst (2000)")
    parser.add_argument(
        "--latency-samples", type=int, default=None, help="sequential violations timed (200)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up actions (100)")
    parser.add_argument("--quick", action="store_true", help="a short run: 300 actions, 50 samples")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads of a burst")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="VIGIL_WORKER_CONCURRENCY for every worker (default: Vigil's own, 10)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every Vigil process (repeatable), e.g. VIGIL_DB_POOL_SIZE=2",
    )
    parser.add_argument("--poll-ms", type=float, default=5.0, help="latency poll interval")
    parser.add_argument("--cooldown", type=float, default=300.0, help="the policy's cooldown")
    parser.add_argument(
        "--log-level", default="warning", help="VIGIL_LOG_LEVEL of every process (warning)"
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for the scaled shape"
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql://root@127.0.0.1:5432",
        help="PostgreSQL server for the scaled shape (a database is created and dropped)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="limit per wait, seconds")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="process start limit")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.actions is None:
        args.actions = 300 if quick else 2000
    if args.latency_samples is None:
        args.latency_samples = 50 if quick else 200
    if args.warmup is None:
        args.warmup = 20 if quick else 100
    if args.actions < 1 or args.latency_samples < 1 or args.warmup < 1:
        parser.error("--actions, --latency-samples and --warmup must be at least 1")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    return args


def main() -> int:
    return run(parse_args())


if __name__ == "__main__":
    sys.exit(main())
