"""Ingest benchmark: Vigil against a bare FastAPI endpoint, side by side, in one run.

Three measurements, each against one uvicorn process on 127.0.0.1, driven by wrk:

1. ``bare``   a FastAPI endpoint that validates the same body (``vigil.ingest.schemas.MetricIn``
              as a normal body parameter) and stores nothing: the ceiling of the HTTP stack;
2. ``single`` ``POST /api/v1/ingest`` on ``vigil serve`` with 100 policies loaded (none violated
              by the load) on a fresh SQLite file;
3. ``batch``  ``POST /api/v1/ingest/batch`` on the same Vigil, in metrics/s.

Bare and single run side by side and are measured in alternating rounds (``--rounds``), so a
change in the machine's load falls on both alike. Every sample carries the time it is sent
at; a batch's samples span the last ``--spread`` seconds, as a collector's flush does.

Only 2xx responses count: a wrk Lua ``response`` hook counts the others, which are reported
and subtracted. Targets: single-metric ingest at least 40% of the bare endpoint's
requests/s, batch ingest at least 50,000 metrics/s.

Run: ``.venv/bin/python bench/ingest.py`` (or ``make bench``); ``--help`` for the flags.
wrk comes from Debian: ``apt-get install -y wrk``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The bare endpoint's body model, imported here: FastAPI resolves its annotation in this module.
from vigil.ingest.schemas import MetricIn
from vigil.local import Server, clean_env, free_port, running

RATIO_TARGET = 0.40
BATCH_TARGET = 50_000.0
POLICY_COUNT = 100

# Metrics the load sends: name -> (lowest, highest value sent). Every policy threshold below
# lies outside these ranges, so the load never violates a policy.
METRICS: dict[str, tuple[float, float]] = {
    "cpu_usage": (5.0, 60.0),
    "memory_percent": (20.0, 70.0),
    "disk_free_percent": (20.0, 80.0),
    "latency_p99_ms": (20.0, 400.0),
    "http_5xx_rate": (0.0, 0.5),
    "load_avg_1m": (0.1, 3.0),
    "queue_depth": (0.0, 200.0),
    "health_check_failures": (0.0, 2.0),
    "open_fds": (100.0, 4000.0),
    "swap_percent": (0.0, 10.0),
    "net_errors": (0.0, 5.0),
    "gc_pause_ms": (1.0, 50.0),
    "replica_lag_seconds": (0.0, 2.0),
    "conn_pool_used_percent": (0.0, 60.0),
    "temperature_c": (30.0, 65.0),
    "restarts_total": (0.0, 1.0),
}
# The metrics the single-metric load cycles through (each read by simple and compound policies).
SINGLE_METRICS = ("cpu_usage", "memory_percent", "disk_free_percent", "latency_p99_ms")
TARGET_GLOBS = ("all", "*", "web-*", "api-*", "db-*", "web-0[0-4]?", "api-1*", "cache-*")
ACTIONS = ("scale-up", "restart-service", "custom", "drain-pod", "scale-down")
SEVERITIES = ("info", "warning", "critical")


# --- the bare endpoint (run in a subprocess by ``--serve-bare``) ----------------------------


def serve_bare(port: int) -> None:
    """The bare endpoint: validate a MetricIn body, store nothing; uvicorn as ``vigil serve``."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI(title="bare")

    # No response model: the leanest honest FastAPI endpoint, so the ratio is conservative.
    @app.post("/api/v1/ingest", status_code=201, response_model=None)
    async def ingest(metric: MetricIn) -> dict[str, Any]:
        return {"ok": True, "status": "validated", "name": metric.name}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    # The same uvicorn options as `vigil serve` (uvloop and httptools are picked by "auto").
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


# --- the load: policies, hosts, Lua scripts, batch bodies -----------------------------------


def hosts(count: int) -> list[str]:
    """``count`` host names: half web-NNN, a third api-NNN, the rest db-NNN."""
    web = count // 2
    api = count // 3
    names = [f"web-{i:03d}" for i in range(web)]
    names += [f"api-{i:03d}" for i in range(api)]
    names += [f"db-{i:03d}" for i in range(count - web - api)]
    return names


def _leaf(metric: str, n: int) -> dict[str, Any]:
    """A simple condition on ``metric`` that the load never makes true."""
    lo, hi = METRICS[metric]
    if n % 3 == 2 and lo > 0:
        return {"type": "metric_below", "metric": metric, "threshold": round(lo / (2 + n % 4), 3)}
    span = hi - lo if hi > lo else 1.0
    return {"type": "metric_exceeds", "metric": metric, "threshold": round(hi + span * (1 + n % 5))}


def policies(count: int = POLICY_COUNT) -> list[dict[str, Any]]:
    """``count`` realistic policies: ~60% simple, ~25% ``all``, ~15% ``any``, a few disabled."""
    names = list(METRICS)
    out: list[dict[str, Any]] = []
    for n in range(count):
        kind = n % 20
        metric = names[n % len(names)]
        if kind < 12:
            condition = _leaf(metric, n)
        else:
            other = names[(n * 7 + 3) % len(names)]
            if other == metric:
                other = names[(n + 1) % len(names)]
            children = [_leaf(metric, n), _leaf(other, n + 1)]
            if n % 4 == 0:
                third = names[(n * 5 + 1) % len(names)]
                if third not in (metric, other):
                    children.append(_leaf(third, n + 2))
            condition = {"type": "all" if kind < 17 else "any", "conditions": children}
        out.append(
            {
                "name": f"bench-{n:03d}-{metric.replace('_', '-')}",
                "description": f"benchmark policy {n} on {metric}",
                "severity": SEVERITIES[n % 3],
                "target": TARGET_GLOBS[n % len(TARGET_GLOBS)] if n % 10 else f"web-{n:03d}",
                "enabled": n % 25 != 24,
                "auto_remediate": n % 3 != 0,
                "condition": condition,
                "action": ACTIONS[n % len(ACTIONS)],
                "params": {"replicas": 2} if n % 5 == 0 else {},
                "cooldown_seconds": 300,
            }
        )
    return out


def policies_yaml(items: list[dict[str, Any]]) -> str:
    # JSON is YAML: no need for a YAML writer.
    return json.dumps({"policies": items}, indent=1)


def _lua_list(items: list[str]) -> str:
    return "{" + ", ".join(json.dumps(i) for i in items) + "}"


_LUA_REPORT = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non2xx") or 0) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, bad, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def single_lua(
    host_names: list[str], metrics: Mapping[str, tuple[float, float]] | None = None
) -> str:
    """POST one metric per request, cycling through hosts and ``metrics`` (name -> lowest,
    highest value sent; by default SINGLE_METRICS), never violating."""
    if metrics is None:
        metrics = {m: METRICS[m] for m in SINGLE_METRICS}
    ranges = ", ".join(f"{{{lo}, {hi}}}" for lo, hi in metrics.values())
    return (
        f"""
local hosts = {_lua_list(host_names)}
local names = {_lua_list(list(metrics))}
local ranges = {{{ranges}}}
local regions = {{"us-east-1", "eu-west-1", "ap-south-1"}}
counter = 0
non2xx = 0
function init(args)
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local host = hosts[counter % #hosts + 1]
  local m = math.floor(counter / #hosts) % #names + 1
  local r = ranges[m]
  local value = r[1] + (r[2] - r[1]) * ((counter * 7919) % 1000) / 1000
  local body = string.format(
    '{{"name":"%s","value":%.3f,"target":"%s","timestamp":"%s",' ..
    '"tags":{{"host":"%s","region":"%s","env":"prod"}}}}',
    names[m], value, host, os.date("!%Y-%m-%dT%H:%M:%SZ"), host,
    regions[counter % #regions + 1])
  return wrk.format("POST", "/api/v1/ingest", nil, body)
end
"""
        + _LUA_REPORT
    )


def batch_lua(paths: list[Path], spread: int) -> str:
    """POST the batch bodies in turn, each sample stamped when its request is sent.

    The bodies hold ``@AGE@`` where a timestamp goes (``AGE`` seconds before sending, less
    than ``spread``): as a collector flushing every ``spread`` seconds sends them. Bodies
    with frozen timestamps, sent over and over, would pile every sample onto the same few
    seconds of the metrics index, which no real fleet does.
    """
    return (
        f"""
local paths = {_lua_list([str(p) for p in paths])}
local spread = {spread}
local bodies = {{}}
counter = 0
non2xx = 0
function init(args)
  wrk.headers["Content-Type"] = "application/json"
  for i, path in ipairs(paths) do
    local f = assert(io.open(path, "rb"))
    bodies[i] = f:read("*a")
    f:close()
  end
end
function request()
  counter = counter + 1
  local now = os.time()
  local stamps = {{}}
  for age = 0, spread - 1 do
    stamps[tostring(age)] = os.date("!%Y-%m-%dT%H:%M:%SZ", now - age)
  end
  local body = bodies[counter % #bodies + 1]:gsub("@(%d+)@", stamps)
  return wrk.format("POST", "/api/v1/ingest/batch", nil, body)
end
"""
        + _LUA_REPORT
    )


def batch_body(
    host_names: list[str],
    size: int,
    offset: int,
    spread: int,
    metrics: Mapping[str, tuple[float, float]] = METRICS,
) -> bytes:
    """A batch of ``size`` samples: (host, metric) pairs in turn, as an agent fleet sends them,
    over ``metrics`` (name -> lowest, highest value sent).

    Each timestamp is ``@AGE@``, filled in by the Lua script when the request is sent.
    """
    names = list(metrics)
    items = []
    for i in range(offset, offset + size):
        host = host_names[i % len(host_names)]
        metric = names[(i // len(host_names)) % len(names)]
        lo, hi = metrics[metric]
        items.append(
            {
                "name": metric,
                "value": round(lo + (hi - lo) * ((i * 7919) % 1000) / 1000, 3),
                "target": host,
                "timestamp": f"@{(offset + size - i) % spread}@",
                "tags": {"host": host, "region": ("us-east-1", "eu-west-1")[i % 2]},
            }
        )
    return json.dumps({"metrics": items}, separators=(",", ":")).encode()


# --- processes ------------------------------------------------------------------------------


def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON body) of one request; bench traffic only goes to 127.0.0.1."""
    assert url.startswith("http://127.0.0.1:"), url
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


# --- wrk ------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.non2xx

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def combine(parts: list[WrkResult]) -> WrkResult:
    """Rounds of one measurement added up; latency percentiles are the rounds' mean,
    weighted by their requests (an approximation), the maximum the largest."""
    total = sum(p.requests for p in parts) or 1

    def mean(field: str) -> float:
        return sum(getattr(p, field) * p.requests for p in parts) / total

    return WrkResult(
        requests=sum(p.requests for p in parts),
        duration_s=sum(p.duration_s for p in parts),
        non2xx=sum(p.non2xx for p in parts),
        socket_errors=sum(p.socket_errors for p in parts),
        p50_ms=mean("p50_ms"),
        p90_ms=mean("p90_ms"),
        p99_ms=mean("p99_ms"),
        max_ms=max(p.max_ms for p in parts),
    )


def wrk(url: str, script: Path, *, connections: int, seconds: float, timeout_s: float) -> WrkResult:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={round(timeout_s)}s",
        "-s",
        str(script),
        url,
    ]
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
    )
    line = next(
        (ln for ln in completed.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None
    )
    if completed.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
        )
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        non2xx=data["non2xx"],
        socket_errors=data["connect_errors"]
        + data["read_errors"]
        + data["write_errors"]
        + data["timeouts"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


@dataclass(frozen=True)
class Load:
    """One wrk load: ``script`` against ``path`` on ``server``."""

    name: str
    server: Server
    path: str
    script: Path
    connections: int
    request_timeout: float

    def run(self, seconds: float) -> WrkResult:
        result = wrk(
            f"{self.server.url}{self.path}",
            self.script,
            connections=self.connections,
            seconds=seconds,
            timeout_s=self.request_timeout,
        )
        if self.server.process.poll() is not None:
            raise RuntimeError(f"{self.server.name} died during the run:\n{self.server.log_tail()}")
        return result


def measure(
    loads: list[Load], seconds: float, *, rounds: int = 1, warmup: float = 0.0
) -> dict[str, WrkResult]:
    """Warm each load up, then run them in turn ``rounds`` times (A B, then B A, ...),
    ``seconds`` each time, so a change in the machine's load during the run falls on
    all alike; each load's rounds added up, by load name."""
    for load in loads:
        if warmup > 0:
            load.run(warmup)
    names = " and ".join(load.name for load in loads)
    print(f"  measuring {names}: {rounds} round(s) of {seconds:g}s ...", flush=True)
    parts: dict[str, list[WrkResult]] = {load.name: [] for load in loads}
    for n in range(rounds):
        for load in loads if n % 2 == 0 else loads[::-1]:
            parts[load.name].append(load.run(seconds))
    return {name: combine(found) for name, found in parts.items()}


# --- the run --------------------------------------------------------------------------------


def check_single(server: Server, path: str, body: dict[str, Any], vigil: bool) -> None:
    """One request by hand before the load: it must be accepted, and violate nothing."""
    status, answer = http("POST", f"{server.url}{path}", body)
    if status != 201:
        raise RuntimeError(f"{server.name}: POST {path} answered {status}: {answer}")
    if vigil and (answer.get("violations") or not answer.get("policies_evaluated")):
        raise RuntimeError(f"{server.name}: the load must violate no policy, got {answer}")
    status, answer = http("POST", f"{server.url}{path}", {**body, "value": "high"})
    if status != 422:
        raise RuntimeError(f"{server.name}: an invalid body got {status}, not 422: {answer}")


def run(args: argparse.Namespace) -> int:
    return run_in_workdir(args, "vigil-bench-", _run)


def run_in_workdir(
    args: argparse.Namespace,
    prefix: str,
    body: Callable[[argparse.Namespace, Path], int],
) -> int:
    """``body(args, workdir)`` in a fresh temporary directory (kept with ``--keep``), once
    wrk is known to be installed."""
    if shutil.which("wrk") is None:
        print(
            "error: wrk is not installed; install it with `apt-get install -y wrk` "
            "(Debian/Ubuntu), then run this again.",
            file=sys.stderr,
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return body(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def write_scripts(
    workdir: Path,
    host_names: list[str],
    args: argparse.Namespace,
    metrics: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[Path, Path]:
    """The wrk scripts of a run, written in ``workdir``: one sample per request, and batches
    of ``args.batch_size`` samples cycling over four bodies (of ``metrics``, by default
    those :func:`single_lua` and :func:`batch_body` choose)."""
    single_script = workdir / "single.lua"
    single_script.write_text(single_lua(host_names, metrics))
    batch_metrics = METRICS if metrics is None else metrics
    batch_paths = []
    for i in range(4):
        path = workdir / f"batch-{i}.json"
        offset = i * args.batch_size
        path.write_bytes(
            batch_body(host_names, args.batch_size, offset, args.spread, batch_metrics)
        )
        batch_paths.append(path)
    batch_script = workdir / "batch.lua"
    batch_script.write_text(batch_lua(batch_paths, args.spread))
    return single_script, batch_script


def _run(args: argparse.Namespace, workdir: Path) -> int:
    host_names = hosts(args.hosts)
    policy_file = workdir / "policies.yaml"
    policy_items = policies()
    policy_file.write_text(policies_yaml(policy_items))
    enabled = sum(1 for p in policy_items if p["enabled"])
    single_script, batch_script = write_scripts(workdir, host_names, args)
    sample = {
        "name": "cpu_usage",
        "value": 42.5,
        "target": host_names[0],
        "tags": {"host": host_names[0], "region": "us-east-1"},
    }

    base = clean_env()
    python = sys.executable
    here = Path(__file__).resolve()
    conns = args.connections
    timeout = args.start_timeout
    results: dict[str, WrkResult] = {}

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    print(
        "bare FastAPI endpoint (MetricIn, stores nothing) and, beside it, "
        f"vigil serve on a fresh SQLite file with {enabled} enabled policies ...",
        flush=True,
    )
    bare_port = free_port()
    port = free_port()
    env = {
        **base,
        "DATABASE_URL": f"sqlite:///{workdir / 'vigil.db'}",
        "VIGIL_PORT": str(port),
        "VIGIL_HOST": "127.0.0.1",
        "VIGIL_POLICIES_FILE": str(policy_file),
        "VIGIL_LOG_LEVEL": "warning",
    }
    with (
        running(
            "bare",
            [python, str(here), "--serve-bare", str(bare_port)],
            base,
            bare_port,
            workdir,
            timeout,
        ) as bare,
        running(
            "vigil", [python, "-m", "vigil", "serve", "--no-worker"], env, port, workdir, timeout
        ) as vigil,
    ):
        check_single(bare, "/api/v1/ingest", sample, vigil=False)
        status, listed = http("GET", f"{vigil.url}/api/v1/policies")
        if status != 200 or listed.get("enabled_count") != enabled:
            raise RuntimeError(f"vigil did not load the {enabled} policies: {status} {listed}")
        check_single(vigil, "/api/v1/ingest", sample, vigil=True)
        ingest_path = "/api/v1/ingest"
        wait = args.request_timeout
        results |= measure(
            [
                Load("bare", bare, ingest_path, single_script, conns, wait),
                Load("single", vigil, ingest_path, single_script, conns, wait),
            ],
            args.duration / args.rounds,
            rounds=args.rounds,
            warmup=args.warmup,
        )
        batch_path = "/api/v1/ingest/batch"
        results |= measure(
            [Load("batch", vigil, batch_path, batch_script, args.batch_connections, wait)],
            args.batch_duration or args.duration,
            warmup=args.warmup,
        )
        status, listed = http("GET", f"{vigil.url}/api/v1/actions?limit=1")
        actions = listed.get("total") if status == 200 else None
    elapsed = time.monotonic() - started
    log = vigil.log.read_text(errors="replace").splitlines()
    errors = sum(1 for line in log if line.startswith("ERROR"))
    hang_ups = sum(1 for line in log if line.startswith("starlette.requests.ClientDisconnect"))
    stored = count_rows(workdir / "vigil.db")

    report(args, results, actions=actions, enabled=enabled, elapsed=elapsed)
    print(
        f"metrics stored: {stored:,}; vigil log: {errors} errors ({hang_ups} of them wrk "
        "hanging up on requests in flight as a run ends)"
    )
    print(
        f"load average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f} "
        "(other work on the machine makes the figures noisy)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "cpus": os.cpu_count(),
                    "args": vars(args),
                    "results": {k: {**vars(v), "ok_per_s": v.ok_per_s} for k, v in results.items()},
                },
                indent=2,
            )
        )
    bare_rps, single_rps = results["bare"].ok_per_s, results["single"].ok_per_s
    met = single_rps >= RATIO_TARGET * bare_rps and batch_rate(args, results) >= BATCH_TARGET
    return 0 if met or not args.strict else 1


def count_rows(path: Path) -> int:
    """Rows in the metrics table of the (stopped) Vigil's database."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM metrics").fetchone()[0])


def batch_rate(args: argparse.Namespace, results: dict[str, WrkResult]) -> float:
    return results["batch"].ok_per_s * args.batch_size


def report(
    args: argparse.Namespace,
    results: dict[str, WrkResult],
    *,
    actions: int | None,
    enabled: int,
    elapsed: float,
) -> None:
    bare, single, batch = results["bare"], results["single"], results["batch"]
    ratio = single.ok_per_s / bare.ok_per_s if bare.ok_per_s else 0.0
    metrics_per_s = batch_rate(args, results)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(
        f"Vigil ingest benchmark, {when}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, SQLite (fresh temp file), {POLICY_COUNT} policies "
        f"({enabled} enabled), {args.hosts} hosts"
    )
    print(
        f"single: wrk -t1 -c{args.connections}, {args.duration:g}s; batch: wrk -t1 "
        f"-c{args.batch_connections}, {args.batch_duration or args.duration:g}s, "
        f"{args.batch_size:,} metrics per request; warm-up {args.warmup:g}s each"
    )
    print()
    header = (
        f"{'':34} {'2xx req/s':>10} {'2xx':>8} {'non-2xx':>8} {'sock err':>8} "
        f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, r in (
        ("bare FastAPI POST /api/v1/ingest", bare),
        ("vigil POST /api/v1/ingest", single),
        ("vigil POST /api/v1/ingest/batch", batch),
    ):
        print(
            f"{label:34} {r.ok_per_s:>10,.1f} {r.ok:>8,} {r.non2xx:>8,} {r.socket_errors:>8,} "
            f"{r.p50_ms:>8.2f} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
        )
    print()
    ratio_ok = ratio >= RATIO_TARGET
    batch_ok = metrics_per_s >= BATCH_TARGET
    print(f"{'target':48} {'measured':>16} {'goal':>12}  result")
    print(
        f"{'single-metric ingest, vigil / bare (2xx req/s)':48} {ratio:>16.1%} "
        f"{'>= ' + format(RATIO_TARGET, '.0%'):>12}  {'PASS' if ratio_ok else 'MISS'}"
    )
    print(
        f"{'batch ingest, metrics/s (2xx only)':48} {metrics_per_s:>16,.0f} "
        f"{'>= ' + format(BATCH_TARGET, ',.0f'):>12}  {'PASS' if batch_ok else 'MISS'}"
    )
    print()
    print(
        f"actions created by the load: {actions if actions is not None else '?'} (expected 0); "
        f"total run time {elapsed:.0f}s"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measurement (bare, single)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating rounds the bare and single measurements are split into",
    )
    parser.add_argument(
        "--batch-duration", type=float, default=None, help="seconds for batch (default --duration)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c for single/bare")
    parser.add_argument("--batch-connections", type=int, default=4, help="wrk -c for batch")
    parser.add_argument("--batch-size", type=int, default=5000, help="metrics per batch request")
    parser.add_argument(
        "--spread",
        type=int,
        default=10,
        help="seconds over which a batch's timestamps spread (a collector's flush interval)",
    )
    parser.add_argument("--hosts", type=int, default=300, help="distinct targets in the load")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="wrk --timeout")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="server start timeout")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be 1..10000 (Vigil's default batch limit)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.spread < 1:
        parser.error("--spread must be at least 1 second")
    return args


def main() -> int:
    args = parse_args()
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
