"""A real Prometheus scrapes a real ``vigil serve``: a violating ingest shows up, through
Prometheus's own query API, as a rise of ``vigil_policy_violations_total``.

Prometheus is the machine's ``prometheus`` binary (Debian's package; ``.ci/run`` installs
it), run as this test's own child on a free port with throwaway storage, scraping every
second.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.procs import Processes, wait_for
from tests.e2e.prometheus import running_prometheus, scraping
from tests.e2e.vigil_api import ACTION, Api
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


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_prometheus_sees_violations_rise_after_a_violating_ingest(
    procs: Processes, tmp_path: Path
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    # Prometheus first: it takes its targets up some seconds after it starts, while Vigil does.
    with running_prometheus(tmp_path, scraping(target, job=JOB)) as prometheus:
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
