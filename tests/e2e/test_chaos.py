"""A chaos run: a minute of ``vigil simulate --mode chaos`` (load spikes, hosts that stop
sending heartbeats, malformed payloads, requests given up on) against the embedded server
and against the scaled-out shape on Redis, whose remediator reaches the fleet over the
fleet API. After a bounded drain, nothing is lost:

- no request got a 5xx, and no process logged an error (a client giving up is not one);
- every action is terminal: actions = completed + failed + cancelled;
- violations = actions created + suppressed decisions: every violation that reached a
  decision (each firing transition, and each attempt a guard held back, counted on its
  decision row) either created exactly one action or was suppressed with a reason. Checked
  on the rows (each ``acted`` decision names one action, each action created by a policy
  has one ``acted`` decision, and no other outcome occurs) and on the counters:
  ``vigil_decisions_total`` = actions created + the suppressed rows' counts, and
  ``vigil_policy_violations_total``, which also counts the samples that keep violating
  within an episode that has already acted, is at least that.

``VIGIL_CHAOS_SECONDS`` sets the length of the load (default 60).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import services
from tests.e2e.procs import Processes, wait_for
from vigil.strict import CLIENT_HEADERS

SECONDS = float(os.environ.get("VIGIL_CHAOS_SECONDS", "60"))
DRAIN_SECONDS = 60.0
TERMINAL = {"completed", "failed", "cancelled"}
WATCHED = {"vigil_decisions_total", "vigil_policy_violations_total", "vigil_actions_total"}

POLICIES = {
    "policies": [
        {
            "name": "chaos-hot-service",
            "target": "*",
            "auto_remediate": True,
            "condition": {"type": "threshold", "metric": "cpu_usage", "operator": ">",
                          "threshold": 90},
            "action": "scale-up",
            "params": {"replicas": 1},
            "cooldown_seconds": 3,
            "max_actions_per_hour": 6,
        },
        {
            "name": "chaos-silent-host",
            "target": "*-0*",
            "auto_remediate": True,
            "condition": {"type": "absent", "metric": "heartbeat", "for": "3s"},
            "action": "restart-service",
            "cooldown_seconds": 3,
            "max_concurrent_targets": 2,
        },
        {
            "name": "chaos-memory",
            "target": "*-0*",
            "auto_remediate": True,
            # Memory starts at 40-50% and grows 0.2% a second: within half a minute all six
            # hosts pass 45%, while the breaker allows two restarts an hour, so the guards
            # certainly hold some back.
            "condition": {"type": "threshold", "metric": "memory_percent", "operator": ">",
                          "threshold": 45},
            "action": "restart-service",
            "cooldown_seconds": 5,
            "max_actions_per_hour": 2,
        },
    ]
}  # fmt: skip

REMEDIATIONS = """\
remediations:
  - {action: scale-up, plugin: simulator}
  - {action: restart-service, plugin: simulator}
"""


def write_files(directory: Path) -> dict[str, str]:
    policies = directory / "chaos-policies.yaml"
    policies.write_text(json.dumps(POLICIES))
    remediations = directory / "chaos-remediations.yaml"
    remediations.write_text(REMEDIATIONS)
    return {
        "VIGIL_POLICIES_FILE": str(policies),
        "VIGIL_REMEDIATIONS_FILE": str(remediations),
        "VIGIL_RUNNER_INTERVAL_SECONDS": "1",
        "VIGIL_LOG_LEVEL": "warning",
    }


def simulate(url: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable, "-m", "vigil", "simulate", "--url", url, "--mode", "chaos",
            "--rate", "300", "--duration", f"{SECONDS:g}", "--seed", "11", "--json",
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def every(api: httpx.Client, path: str, key: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        body = api.get(path, params={"page": page, "limit": 500}).json()
        rows += body[key]
        if len(rows) >= body["total"] or not body[key]:
            return rows
        page += 1


def counters(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (metric, have), value in found.items()
        if metric == name and all((k, v) in have for k, v in labels.items())
    )


def error_lines(procs: Processes) -> list[str]:
    """Every ERROR line the processes logged (JSON logs: one object per line)."""
    found = []
    for proc in procs.started:
        for line in proc.log_path.read_text(errors="replace").splitlines():
            if '"level": "error"' in line or '"level": "critical"' in line:
                found.append(f"{proc.name}: {line[:300]}")
    return found


def chaos_run(url: str, procs: Processes) -> None:
    load = simulate(url)
    assert load["server_errors"] == 0, load
    assert load["malformed"] > 0, load  # the chaos really happened
    assert load["abandoned"] > 0, load
    assert load["generated"] == load["succeeded"] + load["rejected"] + load["failed"]
    assert load["rejected"] > 0
    assert load["succeeded"] > load["generated"] * 0.8, load

    with httpx.Client(base_url=url, timeout=10, headers=CLIENT_HEADERS) as api:
        # The operator turns the policies off, then lets the queue drain.
        for policy in POLICIES["policies"]:
            assert api.put(f"/api/v1/policies/{policy['name']}/disable").status_code == 200

        def drained() -> list[dict[str, Any]] | None:
            actions = every(api, "/api/v1/actions", "actions")
            return actions if all(a["status"] in TERMINAL for a in actions) else None

        actions = wait_for(
            drained, timeout=DRAIN_SECONDS, what="every action terminal", procs=procs,
            interval=0.5,
        )  # fmt: skip
        # Nothing in flight any more: two reads in a row agree (the request counters aside:
        # reading them counts).
        reads: list[Any] = []

        def settled() -> tuple[list[dict[str, Any]], dict[Any, float]] | None:
            decisions = every(api, "/api/v1/decisions", "decisions")
            found = counters(api)
            watched = {k: v for k, v in found.items() if k[0] in WATCHED}
            reads.append((len(decisions), sum(d["count"] for d in decisions), watched))
            agree = len(reads) > 1 and reads[-1] == reads[-2]
            return (decisions, found) if agree else None

        decisions, found = wait_for(
            settled, timeout=30, what="the decisions to stop changing", procs=procs, interval=1.0
        )

        by_policy = [a for a in actions if a["policy_name"]]
        statuses = {s: sum(a["status"] == s for a in actions) for s in sorted(TERMINAL)}
        reasons = sorted({d["reason"] for d in decisions if d["outcome"] == "suppressed"})
        print(f"\nchaos: {load}\nactions {statuses}, decisions {len(decisions)}: {reasons}")
        assert len(by_policy) >= 3, f"too little happened: {by_policy}"
        assert {a["status"] for a in actions} <= TERMINAL
        acted = [d for d in decisions if d["outcome"] == "acted"]
        suppressed = [d for d in decisions if d["outcome"] == "suppressed"]
        assert len(decisions) == len(acted) + len(suppressed), decisions
        assert sorted(d["action_id"] for d in acted) == sorted(a["id"] for a in by_policy)
        assert suppressed, "the guards never held anything back"
        completed = sum(a["status"] == "completed" for a in actions)
        assert completed > 0

        suppressed_count = sum(d["count"] for d in suppressed)
        assert total(found, "vigil_decisions_total", outcome="acted") == len(by_policy)
        assert total(found, "vigil_decisions_total", outcome="suppressed") == suppressed_count
        assert total(found, "vigil_decisions_total") == len(by_policy) + suppressed_count
        violations = total(found, "vigil_policy_violations_total")
        assert violations >= len(by_policy) + suppressed_count
        server_errors = sum(
            value
            for (metric, labels), value in found.items()
            if metric == "vigil_http_requests_total" and dict(labels)["status"].startswith("5")
        )
        assert server_errors == 0
        # A client that gives up mid-request is not an error (it is counted as 499).
        assert error_lines(procs) == []
        fleet = api.get("/api/v1/simulator/fleet").json()["services"]
        assert fleet["web"]["replicas"] > 2 or fleet["web"]["restarts"] > 0, fleet


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + DRAIN_SECONDS + 120)
def test_chaos_against_the_embedded_server(procs: Processes, tmp_path: Path) -> None:
    env = {**write_files(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'vigil.db'}"}
    api = procs.serve(env=env)
    chaos_run(api.url, procs)


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + DRAIN_SECONDS + 120)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_chaos_against_the_scaled_out_shape(
    procs: Processes, tmp_path: Path, database_url: str, queue_prefix: str
) -> None:
    services.need_redis()
    shared = {
        **write_files(tmp_path),
        "DATABASE_URL": database_url,
        "REDIS_URL": services.REDIS_URL,
        "VIGIL_QUEUE_PREFIX": queue_prefix,
        "VIGIL_DB_POOL_SIZE": "4",
    }
    api = procs.serve(no_worker=True, env=shared)
    # The remediator is its own process: its simulator plugin reaches the fleet over the API.
    remediator = procs.remediator(env={**shared, "VIGIL_API_URL": api.url}, wait=False)
    procs.wait_healthy(remediator)
    workers = [
        procs.worker(f"worker-{n}", env={**shared, "VIGIL_REMEDIATOR_URL": remediator.url},
                     wait=False)
        for n in (1, 2)
    ]  # fmt: skip
    procs.wait_healthy(*workers)
    try:
        chaos_run(api.url, procs)
    finally:
        procs.stop_all()
