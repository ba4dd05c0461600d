"""``vigil demo`` end to end, in fast mode: every step of the story is asserted again here,
through the API and /metrics of the server it leaves running (``--keep``)."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vigil.local import free_port


def demo(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "vigil", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@pytest.fixture
def kept() -> Iterator[list[tuple[int, Path]]]:
    """The servers (pid, directory) a ``--keep`` run leaves behind: stopped afterwards."""
    servers: list[tuple[int, Path]] = []
    yield servers
    for pid, directory in servers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        shutil.rmtree(directory, ignore_errors=True)


def violations(api: httpx.Client) -> float:
    text = api.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "vigil_policy_violations"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("policy_name") == "high-cpu-alert"
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_demo_tells_the_whole_story(kept: list[tuple[int, Path]]) -> None:
    port = free_port()
    done = demo("--fast", "--keep", "--port", str(port))
    output = done.stdout
    found = re.search(r"\(pid (\d+), data and log in (\S+);", output)
    if found:
        kept.append((int(found.group(1)), Path(found.group(2))))
    assert done.returncode == 0, output + done.stderr
    url = f"http://127.0.0.1:{port}"
    assert f"Vigil is running at {url}" in output
    assert "every step happened" in output
    for line in ("web tier at normal load", "load rises", "high-cpu-alert fired", "verified"):
        assert line in output

    # Steps 3-6 again, through the API.
    with httpx.Client(base_url=url, timeout=10) as api:
        check_story(api)


def check_story(api: httpx.Client) -> None:
    actions: list[dict[str, Any]] = api.get(
        "/api/v1/actions", params={"policy": "high-cpu-alert"}
    ).json()["actions"]
    assert len(actions) == 1, actions  # one episode, one action
    action = actions[0]
    assert (action["action"], action["target"], action["params"]) == (
        "scale-up",
        "web",
        {"replicas": 2},
    )
    assert action["status"] == "completed"
    assert action["result"]["details"]["replicas_before"] == 2
    assert action["result"]["details"]["replicas"] == 4
    assert action["verification"]["result"] == "verified"
    history = api.get(f"/api/v1/actions/{action['id']}/history").json()
    assert [(h["from"], h["to"]) for h in history][:3] == [
        (None, "pending"),
        ("pending", "running"),
        ("running", "completed"),
    ]
    fleet = api.get("/api/v1/simulator/fleet").json()["services"]
    assert fleet["web"]["replicas"] == 4
    state = api.get("/api/v1/policies/high-cpu-alert/state").json()
    (pair,) = [p for p in state["targets"] if p["target"] == "web"]
    assert pair["action_id"] == action["id"]
    assert pair["fired_at"] is not None
    # Step 7, and the load still running behind it (--keep), without a single 5xx.
    assert violations(api) >= 1
    status = api.get("/api/v1/simulator/status").json()
    assert status["running"] is True
    assert status["events_succeeded"] > 0
    assert status["server_errors"] == 0


def test_the_demo_refuses_a_taken_port_and_touches_nothing_there() -> None:
    """Another server on the port would answer /health for the demo's own: the demo must
    not drive it."""
    seen: list[str] = []

    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "healthy"}')

        def do_POST(self) -> None:
            seen.append(f"POST {self.path}")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        port = other.server_address[1]
        done = demo("--fast", "--port", str(port), timeout=60)
    finally:
        other.shutdown()
        other.server_close()
    assert done.returncode == 1
    assert f"port {port} is in use" in done.stdout
    assert seen == []
