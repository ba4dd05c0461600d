"""A real Prometheus fires a rule on a gauge this test serves, a real Alertmanager sends it to
a running Vigil (access control on: the agent key in ``http_config.authorization``), and an
``alert`` policy acts once, however often Alertmanager repeats the notification; when the
gauge drops, the rule resolves, the episode settles and the action is verified.

Both servers are the machine's Debian binaries (``.ci/run`` installs them), run as this
test's children on free ports with throwaway storage and second-long intervals.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.procs import Processes, wait_for
from tests.e2e.prometheus import Exporter, running, running_prometheus, scraping
from tests.e2e.vigil_api import ACTION, Api, runs
from tests.services import need_alertmanager
from vigil.local import free_port

TARGET = "web-e2e"
POLICY: dict[str, Any] = {
    "name": "e2e-hot",
    "target": "web-*",
    "auto_remediate": True,
    "condition": {"type": "alert", "alertname": "E2EHot", "matchers": {"severity": "critical"}},
    "action": ACTION,
    "cooldown_seconds": 0,
    "verify": {"within_seconds": 30},
}
RULES = {
    "groups": [
        {
            "name": "e2e",
            "interval": "1s",
            "rules": [
                {
                    "alert": "E2EHot",
                    "expr": "e2e_hot > 0",
                    "for": "0s",
                    "labels": {"severity": "critical", "host": TARGET},
                    "annotations": {"summary": "the e2e gauge is up"},
                }
            ],
        }
    ]
}


def alertmanager_config(url: str, key: str) -> dict[str, Any]:
    """The ``alertmanager.yml`` of docs/prometheus.md, with second-long intervals."""
    return {
        "route": {
            "receiver": "vigil",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "2s",
        },
        "receivers": [
            {
                "name": "vigil",
                "webhook_configs": [
                    {
                        "url": f"{url}/api/v1/alerts/alertmanager",
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {"authorization": {"credentials": key}},
                    }
                ],
            }
        ],
    }


def keys(api: Api) -> tuple[str, str]:
    """An admin key and an agent key; from then on keys are needed (and ``api`` sends the
    admin's)."""
    admin = api.http.post("/api/v1/keys", json={"name": "admin", "role": "admin"})
    assert admin.status_code == 201, admin.text
    api.http.headers["Authorization"] = f"Bearer {admin.json()['key']}"
    agent = api.http.post("/api/v1/keys", json={"name": "alertmanager", "role": "agent"})
    assert agent.status_code == 201, agent.text
    return admin.json()["key"], agent.json()["key"]


def stored_alert(api: Api) -> dict[str, Any] | None:
    found = api.http.get("/api/v1/alerts").json()["alerts"]
    return found[0] if found else None


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@contextmanager
def prometheus_and_alertmanager(
    directory: Path, *, vigil_url: str, key: str, scrape: str
) -> Iterator[None]:
    """A Prometheus scraping ``scrape`` with the e2e rule, sending to an Alertmanager whose
    receiver is Vigil at ``vigil_url`` (with the agent ``key``), both running in the block."""
    am_port = free_port()
    am_config = directory / "alertmanager.yml"
    am_config.write_text(yaml.safe_dump(alertmanager_config(vigil_url, key)))
    rules = directory / "rules.yml"
    rules.write_text(yaml.safe_dump(RULES))
    am_argv = [
        need_alertmanager(),
        f"--config.file={am_config}",
        f"--storage.path={directory / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    alerting = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}
    config = scraping(scrape, job="e2e", rule_files=[str(rules)], alerting=alerting)
    ready = f"http://127.0.0.1:{am_port}/-/ready"
    with (
        running("alertmanager", am_argv, directory / "alertmanager.log", ready),
        running_prometheus(directory, config),
    ):
        yield


def repeats_change_nothing(api: Api, agent: str, runs_dir: Path) -> None:
    """Alertmanager repeats the notification (``repeat_interval`` 2s), and a client sends
    it again by hand: neither adds an action, a run or a decision."""
    first = stored_alert(api)
    assert first is not None
    assert first["status"] == "firing"

    def repeated() -> bool | None:
        found = stored_alert(api)
        assert found is not None
        seen, received = when(found["last_seen_at"]), when(found["received_at"])
        return seen - received >= timedelta(seconds=3) or None

    wait_for(repeated, timeout=15, what="Alertmanager to repeat", procs=api.procs)
    resent = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": first["labels"],
                "annotations": first["annotations"],
                "startsAt": first["starts_at"],
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": first["fingerprint"],
            }
        ],
    }
    answer = httpx.post(
        f"{api.url}/api/v1/alerts/alertmanager",
        json=resent,
        headers={"Authorization": f"Bearer {agent}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["alerts"][0]["decisions"] == []
    assert len(api.actions()) == 1
    assert runs(runs_dir, TARGET) == [1]
    decisions = api.http.get("/api/v1/decisions").json()
    assert decisions["total"] == 1, decisions


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_alertmanager_alerts_act_once_and_their_resolution_verifies(
    procs: Processes, tmp_path: Path, runs_dir: Path
) -> None:
    vigil = procs.serve(
        env={
            "DATABASE_URL": f"sqlite:///{tmp_path / 'vigil.db'}",
            "VIGIL_RUNNER_INTERVAL_SECONDS": "0.5",
        }
    )
    api = Api(vigil.url, procs)
    gauge = Exporter({"e2e_hot": 0})
    try:
        _, agent = keys(api)
        assert httpx.get(f"{vigil.url}/api/v1/alerts", timeout=5).status_code == 401
        api.create_policy(POLICY)
        with prometheus_and_alertmanager(
            tmp_path, vigil_url=vigil.url, key=agent, scrape=gauge.address
        ):
            gauge.values["e2e_hot"] = 1
            wait_for(
                lambda: runs(runs_dir, TARGET) or None,
                timeout=30,
                what="the alert's action to run",
                procs=procs,
            )
            [action] = api.actions()
            assert action["target"] == TARGET
            api.wait_status(action["id"], "completed")
            repeats_change_nothing(api, agent, runs_dir)

            # The gauge drops: the rule resolves, the episode settles, the fix is verified.
            gauge.values["e2e_hot"] = 0

            def verified() -> dict[str, Any] | None:
                found = api.action(action["id"])
                return found if found.get("verification") else None

            result = wait_for(verified, timeout=20, what="the verification", procs=procs)
            assert result["verification"]["result"] == "verified", result
            assert api.policy_state(POLICY["name"])[TARGET]["state"] == "resolved"
            resolved = stored_alert(api)
            assert resolved is not None
            assert resolved["status"] == "resolved"
            assert resolved["ends_at"] is not None
            assert len(api.actions()) == 1
            assert runs(runs_dir, TARGET) == [1]
            assert api.http.get("/api/v1/decisions").json()["total"] == 1
    finally:
        gauge.close()
        api.close()
