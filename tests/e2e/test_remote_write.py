"""A real Prometheus scrapes a tiny exporter this test serves and sends what it scrapes to a
running ``vigil serve`` with ``remote_write`` (access control on, an agent key as its
``authorization``, a ``write_relabel_configs`` filter): a ``threshold`` + ``for`` policy
fires on the metric, and a series no enabled policy reads is dropped and counted.

The ``remote_write`` block is the one docs/prometheus.md shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.procs import Processes, wait_for
from tests.e2e.prometheus import Exporter, running_prometheus, scraping
from tests.e2e.vigil_api import SCALE_UP, Api

HOST = "web-07"
CPU_FOR = {
    "name": "cpu-hot",
    "target": "all",
    "auto_remediate": True,
    "condition": {
        "type": "threshold",
        "metric": "cpu_usage",
        "operator": ">",
        "threshold": 90,
        "for": "2s",
    },
    "action": SCALE_UP,
    "cooldown_seconds": 0,
}
MEMORY = {
    "name": "memory-high",
    "enabled": False,  # its metric still passes Prometheus's filter: Vigil drops it
    "target": "all",
    "condition": {"type": "metric_exceeds", "metric": "memory_percent", "threshold": 95},
    "action": SCALE_UP,
}


def series(**values: float) -> dict[str, float]:
    """The exporter's series: each metric of ``values`` on the host ``HOST``."""
    return {f'{name}{{host="{HOST}"}}': value for name, value in values.items()}


@contextmanager
def serving(exporter: Exporter) -> Iterator[Exporter]:
    try:
        yield exporter
    finally:
        exporter.close()


def remote_write(url: str, key: str) -> dict[str, Any]:
    """The ``remote_write`` entry of docs/prometheus.md, for a Vigil at ``url``."""
    return {
        "url": f"{url}/api/v1/write",
        "authorization": {"credentials": key},
        "write_relabel_configs": [
            {"source_labels": ["__name__"], "regex": "cpu_usage|memory_percent", "action": "keep"}
        ],
        "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms", "max_backoff": "1s"},
        "metadata_config": {"send": False},
    }


def counter(vigil_url: str, sample: str) -> float:
    """The value of ``sample`` (a series as exposed) on Vigil's ``/metrics``, 0 if absent."""
    for line in httpx.get(f"{vigil_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_prometheus_remote_write_feeds_a_for_policy_that_fires(
    procs: Processes, tmp_path: Path
) -> None:
    vigil = procs.serve(
        env={
            "DATABASE_URL": f"sqlite:///{tmp_path / 'vigil.db'}",
            "VIGIL_RUNNER_INTERVAL_SECONDS": "0.25",
            "VIGIL_AUTH": "required",
        },
    )
    api = Api(vigil.url, procs)
    try:
        keys = _keys(api, procs, tmp_path)
        api.http.headers["Authorization"] = f"Bearer {keys['admin']}"
        api.create_policy(CPU_FOR)
        api.create_policy(MEMORY)
        with (
            serving(
                Exporter(series(cpu_usage=40.0, memory_percent=30.0, node_load1=0.5))
            ) as exporter,
            running_prometheus(
                tmp_path,
                scraping(
                    exporter.address,
                    job="node",
                    remote_write=[remote_write(vigil.url, keys["agent"])],
                ),
            ) as prometheus,
        ):

            def what(description: str) -> Callable[[], str]:
                return lambda: description + prometheus.tail()

            stored = 'vigil_ingest_total{source="remote_write"}'
            wait_for(
                lambda: counter(vigil.url, stored) > 0,
                timeout=20,
                what=what("Prometheus to send cpu_usage to Vigil"),
                procs=procs,
            )
            assert api.policy_state(str(CPU_FOR["name"])) == {}  # 40 is no violation
            exporter.values[f'cpu_usage{{host="{HOST}"}}'] = 97.0
            fired = wait_for(
                lambda: _state(api, "firing"),
                timeout=20,
                what=what(f"{CPU_FOR['name']} to fire for {HOST}"),
                procs=procs,
            )
            assert fired["action_id"] is not None, fired
            # memory_percent passed the filter, but no enabled policy reads it.
            unused = 'vigil_ingest_dropped_total{reason="unused"}'
            assert counter(vigil.url, unused) > 0
    finally:
        api.close()


def _state(api: Api, *states: str) -> dict[str, Any] | None:
    row = api.policy_state(str(CPU_FOR["name"])).get(HOST)
    return row if row is not None and row["state"] in states else None


def _keys(api: Api, procs: Processes, tmp_path: Path) -> dict[str, str]:
    """An admin key made with the CLI, and an agent key for Prometheus made with it."""
    created = subprocess.run(
        [sys.executable, "-m", "vigil", "keys", "create", "admin", "--role", "admin"],
        env={**os.environ, **procs.base_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'vigil.db'}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    admin = created.stdout.strip().splitlines()[-1]
    response = api.http.post(
        "/api/v1/keys",
        json={"name": "prometheus", "role": "agent"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 201, response.text
    return {"admin": admin, "agent": response.json()["key"]}
