"""Remote-write benchmark: Prometheus remote-write requests of 10,000 series against the JSON
batch path, in one run, each against ``vigil serve`` on a fresh SQLite file.

Three rows, one after the other, each driven by this script (asyncio + httpx, ``--connections``
requests in flight), each request 10,000 samples (one per series, as Prometheus sends them):

1. ``json batch``  ``POST /api/v1/ingest/batch``, 10,000 metrics: the path agents use;
2. ``stored``      ``POST /api/v1/write`` with ``VIGIL_REMOTE_WRITE_STORE=all``: every sample
                   stored (and evaluated);
3. ``handled``     ``POST /api/v1/write`` with ``used`` (the default): one series in 100 is
                   read by a policy and stored, the rest dropped before becoming samples.

The load: 100 metric names (``metric_00`` .. ``metric_99``) on 100 hosts, the labels
Prometheus adds (``instance``, ``job``) and one more; every server has one policy, reading
``metric_00``, never violated. A row's bodies (``--bodies`` of them, sent in turn) are built
before it starts, their timestamps spread over the ``--spread`` seconds before then; a body
is built with the generated protobuf classes and cramjam, as in the tests.

Only 2xx answers count. Targets: stored at least 150,000 samples/s; handled at least
500,000 samples/s.

Run: ``.venv/bin/python bench/remote_write.py`` (or ``make bench-remote-write``); ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import timeit
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cramjam
import httpx
import orjson

from vigil.ingest.prompb.remote_pb2 import WriteRequest
from vigil.ingest.remote_write import decode
from vigil.ingest.schemas import Limits
from vigil.local import clean_env, free_port, running

STORED_TARGET = 150_000.0
HANDLED_TARGET = 500_000.0
SERIES = 10_000
NAMES = 100
POLICY = """\
policies:
  - name: metric-00-high
    target: all
    condition: {type: metric_exceeds, metric: metric_00, threshold: 1000000}
    action: scale-up
"""
REMOTE_WRITE_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
JSON_HEADERS = {"Content-Type": "application/json"}


def _series(i: int) -> tuple[str, str]:
    """The metric name and host of series ``i``."""
    return f"metric_{i % NAMES:02d}", f"host-{i // NAMES:03d}"


def remote_write_body(ms: int) -> bytes:
    request = WriteRequest()
    for i in range(SERIES):
        name, host = _series(i)
        series = request.timeseries.add()
        series.labels.add(name="__name__", value=name)
        series.labels.add(name="instance", value=f"{host}:9100")
        series.labels.add(name="job", value="node")
        series.labels.add(name="region", value="eu-west-1")
        series.samples.add(value=float(i % 97), timestamp=ms)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def json_body(ms: int) -> bytes:
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat()
    metrics = []
    for i in range(SERIES):
        name, host = _series(i)
        metrics.append(
            {
                "name": name,
                "value": float(i % 97),
                "target": host,
                "tags": {"instance": f"{host}:9100", "job": "node", "region": "eu-west-1"},
                "timestamp": stamp,
            }
        )
    return orjson.dumps({"metrics": metrics})


def bodies(kind: str, count: int, spread: float) -> list[bytes]:
    """``count`` bodies whose timestamps spread over the last ``spread`` seconds."""
    now_ms = int(time.time() * 1000)
    make = remote_write_body if kind == "remote_write" else json_body
    step = int(spread * 1000 / max(count, 1))
    return [make(now_ms - (count - k) * step) for k in range(count)]


@dataclass
class Result:
    name: str
    requests: int
    refused: dict[int, int]
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.requests * SERIES / self.seconds


async def load(
    url: str, headers: dict[str, str], payloads: list[bytes], connections: int, seconds: float
) -> tuple[int, dict[int, int]]:
    """Send ``payloads`` in turn for ``seconds``: the 2xx answers, and the others by status."""
    ok = 0
    refused: dict[int, int] = {}
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient, start: int) -> None:
        nonlocal ok
        k = start
        while time.monotonic() < deadline:
            response = await client.post(url, content=payloads[k % len(payloads)], headers=headers)
            k += 1
            if 200 <= response.status_code < 300:
                ok += 1
            else:
                refused[response.status_code] = refused.get(response.status_code, 0) + 1

    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client, c) for c in range(connections)))
    return ok, refused


def measure(
    name: str, url: str, headers: dict[str, str], payloads: list[bytes], args: argparse.Namespace
) -> Result:
    print(f"{name}: {args.warmup:g} s warm-up, {args.duration:g} s measured ...", flush=True)
    asyncio.run(load(url, headers, payloads, args.connections, args.warmup))
    started = time.monotonic()
    ok, refused = asyncio.run(load(url, headers, payloads, args.connections, args.duration))
    return Result(name, ok, refused, time.monotonic() - started)


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM metrics").fetchone()[0])


def dropped(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('vigil_ingest_dropped_total{reason="unused"}'):
            return float(line.split()[-1])
    return 0.0


def _server_env(workdir: Path, name: str, port: int, store: str) -> dict[str, str]:
    policies = workdir / "policies.yaml"
    policies.write_text(POLICY)
    return clean_env(
        DATABASE_URL=f"sqlite:///{workdir / f'{name}.db'}",
        VIGIL_PORT=str(port),
        VIGIL_HOST="127.0.0.1",
        VIGIL_POLICIES_FILE=str(policies),
        VIGIL_LOG_LEVEL="warning",
        VIGIL_REMOTE_WRITE_STORE=store,
    )


def decode_alone(body: bytes) -> dict[str, float]:
    """Milliseconds to decode one request in this process (best of 15), each way: the
    ceiling of the route, free of HTTP, storage and, mostly, of other work on the machine."""
    limits = Limits(max_tags=64, max_tag_key_length=128, max_tag_value_length=1024)
    best = {}
    for mode, used in (("all", None), ("used", frozenset({"metric_00"}))):

        def once(used: frozenset[str] | None = used) -> None:
            decode(
                body,
                limits=limits,
                max_bytes=64 << 20,
                used=used,
                now=datetime.now(UTC),
                max_future_seconds=600,
            )

        best[mode] = min(timeit.repeat(once, number=1, repeat=15)) * 1000
    return best


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Result]:
    python = sys.executable
    results: dict[str, Result] = {}
    rw_bodies = bodies("remote_write", args.bodies, args.spread)
    alone = decode_alone(rw_bodies[-1])
    print(
        f"decoding one request in this process (best of 15): {alone['all']:.1f} ms with "
        f"'all' ({SERIES / alone['all'] * 1000:,.0f} samples/s), {alone['used']:.1f} ms with "
        f"'used' ({SERIES / alone['used'] * 1000:,.0f} samples/s)",
        flush=True,
    )
    for name, store, path, headers in (
        ("json batch", "all", "/api/v1/ingest/batch", JSON_HEADERS),
        ("stored", "all", "/api/v1/write", REMOTE_WRITE_HEADERS),
        ("handled", "used", "/api/v1/write", REMOTE_WRITE_HEADERS),
    ):
        port = free_port()
        db = name.replace(" ", "-")
        env = _server_env(workdir, db, port, store)
        argv = [python, "-m", "vigil", "serve", "--no-worker"]
        with running(db, argv, env, port, workdir, args.start_timeout) as vigil:
            payloads = (
                bodies("json", args.bodies, args.spread) if headers is JSON_HEADERS else rw_bodies
            )
            result = measure(name, vigil.url + path, headers, payloads, args)
            results[name] = result
            rows = count_rows(workdir / f"{db}.db")
            print(
                f"  {result.samples_per_s:,.0f} samples/s ({result.requests} requests in "
                f"{result.seconds:.1f} s; refused: {result.refused or 'none'}); rows stored: "
                f"{rows:,}; dropped as unused: {dropped(vigil.url):,.0f}",
                flush=True,
            )
    return results


def report(results: dict[str, Result], args: argparse.Namespace) -> bool:
    stored = results["stored"].samples_per_s
    handled = results["handled"].samples_per_s
    batch = results["json batch"].samples_per_s
    print()
    print(f"{'row':<12} {'samples/s':>12} {'target':>10}")
    print(f"{'json batch':<12} {batch:>12,.0f} {'':>10}")
    print(f"{'stored':<12} {stored:>12,.0f} {STORED_TARGET:>10,.0f}")
    print(f"{'handled':<12} {handled:>12,.0f} {HANDLED_TARGET:>10,.0f}")
    print(
        f"stored / json batch: {stored / batch:.2f}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average (1 min) now {os.getloadavg()[0]:.2f}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({name: r.samples_per_s for name, r in results.items()}, indent=2)
        )
    return stored >= STORED_TARGET and handled >= HANDLED_TARGET


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per row")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per row")
    parser.add_argument("--connections", type=int, default=4, help="requests in flight")
    parser.add_argument("--bodies", type=int, default=8, help="distinct bodies per row")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds timestamps span")
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--json", help="write the samples/s of each row to this file")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-rw-"))
    try:
        met = report(run(args, workdir), args)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
