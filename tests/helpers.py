"""Helpers shared by tests: running Vigil as a real process, and the names of its metrics."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from vigil.observability.metrics import VigilMetrics
from vigil.remediation.metrics import RemediatorMetrics

# The series a metric family of each type exposes, by suffix of the family's name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any Vigil setting, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VIGIL_") and k not in ("DATABASE_URL", "REDIS_URL", "CORS_ORIGINS")
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def running_vigil(cwd: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """Run ``vigil serve`` in ``cwd``; yield its base URL once /health answers."""
    log = (cwd / "vigil.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil", "serve", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vigil exited: {(cwd / 'vigil.log').read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vigil did not answer: {(cwd / 'vigil.log').read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def vigil_metric_series() -> dict[str, frozenset[str]]:
    """Every metric of Vigil (the API's and worker's, and the remediator's), by the name
    docs/api.md gives it (``vigil_ingest_total``, ``vigil_build_info``,
    ``vigil_action_duration_seconds``), with the names of the series it exposes."""
    registries = [VigilMetrics(CollectorRegistry()).registry]
    registries.append(RemediatorMetrics(CollectorRegistry()).registry)
    found: dict[str, frozenset[str]] = {}
    for registry in registries:
        for family in registry.collect():
            series = [family.name + suffix for suffix in _SUFFIXES[family.type]]
            found[series[0] if family.type in ("counter", "info") else family.name] = frozenset(
                series
            )
    return found
