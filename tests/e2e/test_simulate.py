"""``vigil simulate`` drives a running ``vigil serve`` from another process over real HTTP,
following the replicas of the server's simulated fleet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.procs import Processes


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_simulate_sends_follows_the_fleet_and_counts(procs: Processes, tmp_path: Path) -> None:
    proc = procs.serve(env={"DATABASE_URL": f"sqlite:///{tmp_path / 'vigil.db'}"})
    scaled = httpx.post(f"{proc.url}/api/v1/simulator/fleet/web/scale", json={"replicas": 5})
    assert scaled.status_code == 200

    run = summary(simulate("--url", proc.url, "--duration", "2", "--rate", "200", "--json"))
    assert run["generated"] >= 3 * 18  # at least three steps of the fleet
    assert run["succeeded"] == run["generated"]
    assert run["rejected"] == run["failed"] == run["server_errors"] == 0
    assert run["replicas"] == {"web": 5, "api": 2, "db": 1}  # Vigil's fleet, followed

    alone = summary(simulate("--url", proc.url, "--duration", "1", "--no-follow", "--json"))
    assert alone["replicas"]["web"] == 2

    chaos = summary(
        simulate(
            "--url", proc.url, "--duration", "3", "--rate", "300", "--mode", "chaos",
            "--malformed-rate", "0.3", "--failure-rate", "0", "--single", "--json",
        )
    )  # fmt: skip
    assert chaos["malformed"] > 0
    assert chaos["rejected"] == chaos["malformed"]  # each malformed request is refused
    assert chaos["failed"] == chaos["server_errors"] == 0
    assert chaos["generated"] == chaos["succeeded"] + chaos["rejected"] + chaos["failed"]


def test_simulate_says_when_vigil_is_unreachable() -> None:
    done = simulate("--url", "http://127.0.0.1:9", "--duration", "1")
    assert done.returncode == 1
    assert "cannot reach Vigil at http://127.0.0.1:9" in done.stderr


def test_simulate_refuses_bad_flags() -> None:
    done = simulate("--mode", "storm")
    assert done.returncode == 2
    assert "unknown --mode 'storm'" in done.stderr
    done = simulate("--targets", "web,cache")
    assert done.returncode == 2
    assert "unknown service(s) cache" in done.stderr
