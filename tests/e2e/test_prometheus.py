"""A real Prometheus scrapes a real ``vigil serve``: a violating ingest shows up, through
Prometheus's own query API, as a rise of ``vigil_policy_violations_total``.

Prometheus is the machine's ``prometheus`` binary (Debian's package; ``.ci/run`` installs
it), run as this test's own child on a free port with throwaway storage, scraping every
second.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml

from tests import helpers
from tests.e2e.procs import LOG_TAIL_LINES, START_TIMEOUT, STOP_TIMEOUT, Processes, wait_for
from tests.e2e.vigil_api import ACTION, Api
from tests.services import need_prometheus
from vigil.local import free_port

JOB = "vigil-api"
POLICY = {
    "name": "prom-cpu-high",
    "severity": "critical",
    "target": "all",
    "auto_remediate": False,
    "condition": {"type": "threshold", "metric": "cpu", "operator": ">", "threshold": 90},
    "action": ACTION,
}
VIOLATIONS = f'vigil_policy_violations_total{{job="{JOB}",policy_name="{POLICY["name"]}"}}'


@dataclass
class Prometheus:
    """A running Prometheus server and a client of its query API."""

    url: str
    log_path: Path
    popen: subprocess.Popen[bytes]
    http: httpx.Client

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to now (``GET /api/v1/query``)."""
        response = self.http.get("/api/v1/query", params={"query": promql})
        assert response.status_code == 200, f"{promql}: {response.text}{self.tail()}"
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single sample's value, or None while there is none."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return "\n----- prometheus -----\n" + "\n".join(lines)


@contextmanager
def running_prometheus(directory: Path, *, job: str, target: str) -> Iterator[Prometheus]:
    """Start Prometheus scraping ``target`` (host:port) every second as ``job``; yield it once
    it is ready; terminate it when the block exits."""
    binary = need_prometheus()
    config = directory / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    port = free_port()
    log_path = directory / "prometheus.log"
    log: IO[bytes] = log_path.open("wb")
    popen = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=5)
    prometheus = Prometheus(url, log_path, popen, http)
    try:
        _wait_ready(prometheus)
        yield prometheus
    finally:
        http.close()
        popen.terminate()
        try:
            popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        log.close()


def _wait_ready(prometheus: Prometheus) -> None:
    def ready() -> bool:
        if prometheus.popen.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {prometheus.popen.returncode}" + prometheus.tail()
            )
        try:
            return prometheus.http.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    helpers.wait_for(
        ready,
        within=START_TIMEOUT,
        what="prometheus to be ready",
        interval=0.05,
        details=prometheus.tail,
    )


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_prometheus_sees_violations_rise_after_a_violating_ingest(
    procs: Processes, tmp_path: Path
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    # Prometheus first: it takes its targets up some seconds after it starts, while Vigil does.
    with running_prometheus(tmp_path, job=JOB, target=target) as prometheus:
        vigil = procs.start(
            "api",
            ["serve", "--port", str(port)],
            port=port,
            env={"DATABASE_URL": f"sqlite:///{tmp_path / 'vigil.db'}"},
        )
        api = Api(vigil.url, procs)
        try:
            api.create_policy(POLICY)

            def what(description: str) -> Callable[[], str]:
                return lambda: description + prometheus.tail()

            wait_for(
                lambda: prometheus.value(f'up{{job="{JOB}"}}') == 1,
                timeout=20,
                what=what(f"Prometheus to scrape {target}"),
                procs=procs,
            )
            # The policy's series exists at 0 from when it was loaded, before any violation.
            series = wait_for(
                lambda: prometheus.query(VIOLATIONS),
                timeout=10,
                what=what(f"{VIOLATIONS} in Prometheus"),
                procs=procs,
            )
            assert len(series) == 1, series
            assert series[0]["metric"]["severity"] == "critical", series
            before = float(series[0]["value"][1])
            assert before == 0, series

            api.ingest("cpu", 97, "web-01")

            def risen() -> float | None:
                value = prometheus.value(VIOLATIONS)
                return value if value is not None and value > before else None

            after = wait_for(
                risen, timeout=10, what=what(f"{VIOLATIONS} to rise above {before}"), procs=procs
            )
            assert after == before + 1
        finally:
            api.close()
