"""Policy-scaling benchmark: ingest with 10,000 policies against ingest with 10, in one run.

Two ``vigil serve --no-worker --no-runner`` processes side by side on 127.0.0.1, each on its
own fresh SQLite file, driven by wrk:

1. ``baseline`` 10 policies, all reading metric ``m0000``;
2. ``scaled``   10,000 policies over 1,000 metric names ``m0000``..``m0999``, 10 per name;
                its 10 on ``m0000`` are exactly the baseline's.

The load sends ``m0000`` only, from ``--hosts`` targets, with values no policy fires on: each
sample is evaluated against the same 10 policies on both servers, so the ratio measures what
the other 9,990 cost ingest. Single-metric (``POST /api/v1/ingest``, req/s) and batch
(``POST /api/v1/ingest/batch``, metrics/s) are each measured on both servers in alternating
rounds (``--rounds``: baseline scaled, then scaled baseline, ...), so a change in the
machine's load falls on both alike. The scaled server's start-up (loading 10,000 policies
from its file) is timed too. ``--names 1`` gives both servers the same 10 policies: the
difference between two identical servers, the noise floor of a run.

Only 2xx responses count. After the load, both servers must have recorded no action and no
decision. Target: with 10,000 policies, single-metric and batch ingest at least
80% of their rate with 10.

Run: ``.venv/bin/python bench/policies.py`` (or ``make bench-policies``); ``--help`` for the
flags. wrk comes from Debian: ``apt-get install -y wrk``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# bench/ingest.py's helpers (this directory is on sys.path when run as a script).
from ingest import (
    Load,
    Server,
    WrkResult,
    check_single,
    count_rows,
    free_port,
    hosts,
    http,
    measure,
    policies_yaml,
    run_in_workdir,
    running,
    write_scripts,
)
from vigil.local import clean_env

RATIO_TARGET = 0.80
PER_NAME = 10
"""Policies on each metric name: one of each kind :func:`policies_for` makes."""
METRIC = "m0000"
"""The metric the load sends: read by the baseline's 10 policies, and the same 10 in scaled."""
VALUES = (100.0, 800.0)
"""The lowest and highest value the load sends; every policy's condition lies outside."""
ACTIONS = ("scale-up", "restart-service", "drain-pod", "scale-down", "custom")


def metric_name(k: int) -> str:
    return f"m{k:04d}"


def peer_of(k: int, names: int) -> str:
    """The second metric of metric ``k``'s compound policies: another name, never ``m0000``
    for ``k > 0`` (so the ingested metric is read by exactly its own 10 policies)."""
    if names < 2:
        return "peer0000"
    return metric_name(1 + (k + names // 2 - 1) % (names - 1))


def policies_for(k: int, names: int, host_names: list[str]) -> list[dict[str, Any]]:
    """The 10 policies of metric ``k``: thresholds with different operators, the legacy
    ``metric_exceeds``, ``all``/``any`` with a second metric, ``expr`` over values and tags;
    targets ``all``, globs and exact names. None fires on values within ``VALUES``."""
    m, peer, v = metric_name(k), peer_of(k, names), k % 7
    exact = host_names[(k * 37) % len(host_names)]

    def threshold(metric: str, operator: str, value: float) -> dict[str, Any]:
        return {"type": "threshold", "metric": metric, "operator": operator, "threshold": value}

    def expr(text: str) -> dict[str, Any]:
        return {"type": "expr", "expression": text}

    # (name suffix, target, condition, extra fields)
    kinds: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        (
            "high",
            "all",
            threshold(m, ">", 900.0 + 10 * v),
            {"clear": threshold(m, "<", 700.0), "auto_remediate": True},
        ),
        ("at-or-above", "web-*", threshold(m, ">=", 950.0 + v), {}),
        ("low", "*", threshold(m, "<", 50.0 - v), {"severity": "info"}),
        (
            "exceeds",
            exact,
            {"type": "metric_exceeds", "metric": m, "threshold": 1000.0 + 50 * v},
            {},
        ),
        ("floor", "api-*", threshold(m, "<=", 10.0), {"shadow": True}),
        (
            "with-peer",
            "db-*",
            {
                "type": "all",
                "conditions": [threshold(m, ">", 850.0 + v), threshold(peer, ">", 0.5)],
            },
            {"max_actions_per_hour": 20, "auto_remediate": True},
        ),
        (
            "either",
            "all",
            {
                "type": "any",
                "conditions": [
                    {"type": "metric_exceeds", "metric": m, "threshold": 990.0},
                    threshold(peer, "<", -1.0),
                ],
            },
            {},
        ),
        ("eu-high", "all", expr(f'{m} > 900 and tags.region == "eu-west-1"'), {}),
        ("band", "web-0[0-4]?", expr(f"{m} < 20 or ({m} > 950 and {peer} > 5)"), {}),
        (
            "prod-peer",
            "api-1*",
            {
                "type": "all",
                "conditions": [
                    threshold(m, ">=", 880.0),
                    expr(f'{peer} > 1 and tags.env == "prod"'),
                ],
            },
            {"approval_required": True, "max_concurrent_targets": 5},
        ),
    ]
    assert len(kinds) == PER_NAME
    return [
        {
            "name": f"{m}-{j}-{suffix}",
            "description": f"policy-scaling benchmark: {suffix} on {m}",
            "severity": ("warning", "critical", "info")[(k + j) % 3],
            "target": target,
            "condition": condition,
            "action": ACTIONS[(k + j) % len(ACTIONS)],
            "params": {"replicas": 2} if j % 4 == 0 else {},
            "cooldown_seconds": 300,
            **extra,
        }
        for j, (suffix, target, condition, extra) in enumerate(kinds)
    ]


def policy_set(names: int, host_names: list[str]) -> list[dict[str, Any]]:
    """``PER_NAME`` policies for each of ``names`` metric names, ``m0000``'s first."""
    return [p for k in range(names) for p in policies_for(k, names, host_names)]


# --- the run --------------------------------------------------------------------------------


@dataclass
class Started:
    server: Server
    seconds: float
    """From starting the process to its first healthy ``/health``."""
    policies: int
    """Enabled policies it reports having loaded."""


def run(args: argparse.Namespace) -> int:
    return run_in_workdir(args, "vigil-bench-policies-", _run)


def _report_footprint(
    memory: dict[str, float | None], stored: dict[str, int], log_errors: dict[str, int]
) -> None:
    """Print each server's memory, the metrics it stored and the ERROR lines it logged."""
    print(
        "resident memory after the run: "
        + ", ".join(
            f"{name} {'?' if mib is None else format(mib, ',.0f')} MiB"
            for name, mib in memory.items()
        )
    )
    print(
        "metrics stored: "
        + ", ".join(f"{name} {count:,}" for name, count in stored.items())
        + "; ERROR lines in the logs: "
        + ", ".join(f"{name} {count}" for name, count in log_errors.items())
    )


def _run(args: argparse.Namespace, workdir: Path) -> int:
    host_names = hosts(args.hosts)
    metrics = {METRIC: VALUES}
    baseline_policies = policies_for(0, args.names, host_names)
    scaled_policies = policy_set(args.names, host_names)
    assert scaled_policies[:PER_NAME] == baseline_policies
    files = {"baseline": baseline_policies, "scaled": scaled_policies}
    for name, items in files.items():
        (workdir / f"{name}.yaml").write_text(policies_yaml(items))
    single_script, batch_script = write_scripts(workdir, host_names, args, metrics)
    sample = {
        "name": METRIC,
        "value": 450.0,
        "target": host_names[0],
        "tags": {"host": host_names[0], "region": "eu-west-1", "env": "prod"},
    }

    base = clean_env()
    started_at = time.monotonic()
    load_before = os.getloadavg()[0]
    print(
        f"vigil serve with {len(baseline_policies)} policies (baseline) and, beside it, with "
        f"{len(scaled_policies):,} policies over {args.names:,} metric names (scaled), "
        "each on a fresh SQLite file ...",
        flush=True,
    )

    def start(stack: contextlib.ExitStack, name: str) -> Started:
        port = free_port()
        env = {
            **base,
            "DATABASE_URL": f"sqlite:///{workdir / f'{name}.db'}",
            "VIGIL_PORT": str(port),
            "VIGIL_HOST": "127.0.0.1",
            "VIGIL_POLICIES_FILE": str(workdir / f"{name}.yaml"),
            "VIGIL_LOG_LEVEL": "warning",
            "VIGIL_RUNNER_ENABLED": "false",
        }
        argv = [sys.executable, "-m", "vigil", "serve", "--no-worker", "--no-runner"]
        began = time.monotonic()
        server = stack.enter_context(running(name, argv, env, port, workdir, args.start_timeout))
        seconds = time.monotonic() - began
        print(f"  {name}: healthy after {seconds:.1f}s", flush=True)
        status, listed = http("GET", f"{server.url}/api/v1/policies", timeout=120.0)
        expected = len(files[name])
        if status != 200 or listed.get("enabled_count") != expected:
            count = listed.get("enabled_count") if status == 200 else listed
            raise RuntimeError(f"{name} did not load the {expected} policies: {status} {count}")
        return Started(server, seconds, expected)

    results: dict[str, WrkResult] = {}
    with contextlib.ExitStack() as stack:
        baseline = start(stack, "baseline")
        scaled = start(stack, "scaled")
        for one in (baseline, scaled):
            check_single(one.server, "/api/v1/ingest", sample, vigil=True)
        wait = args.request_timeout
        ingest, batch = "/api/v1/ingest", "/api/v1/ingest/batch"
        results |= {
            f"{name} single": result
            for name, result in measure(
                [
                    Load(
                        "baseline", baseline.server, ingest, single_script, args.connections, wait
                    ),
                    Load("scaled", scaled.server, ingest, single_script, args.connections, wait),
                ],
                args.duration / args.rounds,
                rounds=args.rounds,
                warmup=args.warmup,
            ).items()
        }
        batch_connections = args.batch_connections
        results |= {
            f"{name} batch": result
            for name, result in measure(
                [
                    Load("baseline", baseline.server, batch, batch_script, batch_connections, wait),
                    Load("scaled", scaled.server, batch, batch_script, batch_connections, wait),
                ],
                (args.batch_duration or args.duration) / args.rounds,
                rounds=args.rounds,
                warmup=args.warmup,
            ).items()
        }
        recorded = {one.server.name: recorded_by(one.server) for one in (baseline, scaled)}
        memory = {one.server.name: rss_mib(one.server) for one in (baseline, scaled)}
    elapsed = time.monotonic() - started_at
    stored = {name: count_rows(workdir / f"{name}.db") for name in files}
    log_errors = {
        one.server.name: sum(
            1
            for line in one.server.log.read_text(errors="replace").splitlines()
            if line.startswith("ERROR")
        )
        for one in (baseline, scaled)
    }

    figures = Figures(args, results)
    report(args, figures, (baseline, scaled), recorded=recorded, elapsed=elapsed)
    _report_footprint(memory, stored, log_errors)
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
                    "startup_seconds": {"baseline": baseline.seconds, "scaled": scaled.seconds},
                    "policies": {"baseline": baseline.policies, "scaled": scaled.policies},
                    "results": {k: {**vars(v), "ok_per_s": v.ok_per_s} for k, v in results.items()},
                    "ratios": {"single": figures.single_ratio, "batch": figures.batch_ratio},
                    "recorded": recorded,
                    "rss_mib": memory,
                },
                indent=2,
            )
        )
    clean = all(count == 0 for counts in recorded.values() for count in counts.values())
    if not clean:
        print("error: the load must record no action and no decision", file=sys.stderr)
        return 1
    return 0 if figures.met or not args.strict else 1


def rss_mib(server: Server) -> float | None:
    """The server process's resident memory in MiB (None where ``/proc`` cannot tell)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def recorded_by(server: Server) -> dict[str, int]:
    """How many actions and decisions ``server`` has recorded (the load must make none)."""
    counts = {}
    for kind in ("actions", "decisions"):
        status, listed = http("GET", f"{server.url}/api/v1/{kind}?limit=1")
        if status != 200:
            raise RuntimeError(f"{server.name}: GET /api/v1/{kind} answered {status}: {listed}")
        counts[kind] = int(listed["total"])
    return counts


@dataclass
class Figures:
    """The rates of one run and their ratios, scaled over baseline."""

    args: argparse.Namespace
    results: dict[str, WrkResult]

    def rate(self, key: str) -> float:
        """2xx requests/s, or metrics/s for a batch."""
        per_request = self.args.batch_size if key.endswith("batch") else 1
        return self.results[key].ok_per_s * per_request

    def ratio(self, kind: str) -> float:
        base = self.rate(f"baseline {kind}")
        return self.rate(f"scaled {kind}") / base if base else 0.0

    @property
    def single_ratio(self) -> float:
        return self.ratio("single")

    @property
    def batch_ratio(self) -> float:
        return self.ratio("batch")

    @property
    def met(self) -> bool:
        return self.single_ratio >= RATIO_TARGET and self.batch_ratio >= RATIO_TARGET


def report(
    args: argparse.Namespace,
    figures: Figures,
    servers: tuple[Started, Started],
    *,
    recorded: dict[str, dict[str, int]],
    elapsed: float,
) -> None:
    baseline, scaled = servers
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(
        f"Vigil policy-scaling benchmark, {when}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, SQLite (fresh temp files), runner off, {args.hosts} hosts"
    )
    print(
        f"baseline: {baseline.policies} policies on {METRIC}; scaled: {scaled.policies:,} "
        f"policies over {args.names:,} metric name{'s' if args.names > 1 else ''} "
        f"({PER_NAME} per name, the baseline's "
        f"{PER_NAME} on {METRIC}); the load sends {METRIC}, values {VALUES[0]:g}..{VALUES[1]:g}"
    )
    print(
        f"single: wrk -t1 -c{args.connections}, {args.duration:g}s each; batch: wrk -t1 "
        f"-c{args.batch_connections}, {args.batch_duration or args.duration:g}s each, "
        f"{args.batch_size:,} metrics per request; {args.rounds} alternating round(s); "
        f"warm-up {args.warmup:g}s each"
    )
    print(f"start-up until healthy: baseline {baseline.seconds:.1f}s, scaled {scaled.seconds:.1f}s")
    print()
    header = (
        f"{'':34} {'2xx req/s':>10} {'metrics/s':>10} {'2xx':>8} {'non-2xx':>8} "
        f"{'sock err':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for key, label in (
        ("baseline single", "baseline POST /api/v1/ingest"),
        ("scaled single", "scaled POST /api/v1/ingest"),
        ("baseline batch", "baseline POST /api/v1/ingest/batch"),
        ("scaled batch", "scaled POST /api/v1/ingest/batch"),
    ):
        r = figures.results[key]
        print(
            f"{label:34} {r.ok_per_s:>10,.1f} {figures.rate(key):>10,.0f} {r.ok:>8,} "
            f"{r.non2xx:>8,} {r.socket_errors:>8,} {r.p50_ms:>8.2f} {r.p90_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
        )
    print()
    goal = ">= " + format(RATIO_TARGET, ".0%")
    print(f"{'target':52} {'measured':>10} {'goal':>8}  result")
    for label, ratio in (
        ("single-metric ingest, scaled / baseline (2xx req/s)", figures.single_ratio),
        ("batch ingest, scaled / baseline (metrics/s)", figures.batch_ratio),
    ):
        verdict = "PASS" if ratio >= RATIO_TARGET else "MISS"
        print(f"{label:52} {ratio:>10.1%} {goal:>8}  {verdict}")
    print()
    print(
        "recorded by the load (expected 0): "
        + "; ".join(
            f"{name} {counts['actions']} actions, {counts['decisions']} decisions"
            for name, counts in recorded.items()
        )
        + f"; total run time {elapsed:.0f}s"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of single-metric load per server"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating rounds each measurement (single, batch) is split into",
    )
    parser.add_argument(
        "--batch-duration",
        type=float,
        default=None,
        help="seconds of batch load per server (default --duration)",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c for single")
    parser.add_argument("--batch-connections", type=int, default=4, help="wrk -c for batch")
    parser.add_argument("--batch-size", type=int, default=1000, help="metrics per batch request")
    parser.add_argument(
        "--spread",
        type=int,
        default=10,
        help="seconds over which a batch's timestamps spread (a collector's flush interval)",
    )
    parser.add_argument("--hosts", type=int, default=1000, help="distinct targets in the load")
    parser.add_argument(
        "--names",
        type=int,
        default=1000,
        help=f"metric names of the scaled server ({PER_NAME} policies each; 1: the same "
        "policies as the baseline, the noise floor)",
    )
    parser.add_argument("--request-timeout", type=float, default=30.0, help="wrk --timeout")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        help="server start timeout (the scaled server loads every policy first)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (dbs, logs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be 1..10000 (Vigil's default batch limit)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.spread < 1:
        parser.error("--spread must be at least 1 second")
    if not 1 <= args.names <= 10_000:
        parser.error("--names must be 1..10000 (names are m0000..m9999)")
    if args.hosts < 3:
        parser.error("--hosts must be at least 3")
    return args


def main() -> int:
    return run(parse_args())


if __name__ == "__main__":
    sys.exit(main())
