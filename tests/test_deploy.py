"""deploy/prometheus travels with the code: promtool accepts the scrape configuration and the
alert rules (and their unit tests pass), and every metric the rules and the Grafana dashboard
name is one Vigil exposes, so renaming a metric breaks this test."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import vigil_metric_series
from tests.services import need_promtool
from vigil.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
CONFIG = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "vigil-alerts.yml"
ALERT_TESTS = DEPLOY / "vigil-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"

METRIC_NAME = re.compile(r"\bvigil_[a-z0-9_]*[a-z0-9]\b")
SEVERITIES = {"critical", "warning", "info"}
# Grafana's own variables, with a value Prometheus accepts in their place.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def promtool(*args: str) -> str:
    result = subprocess.run(
        [need_promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    nested = [inner for panel in panels for inner in panel.get("panels", [])]
    return panels + nested


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in dashboard_panels() for t in panel.get("targets", [])]


def series() -> set[str]:
    return set().union(*vigil_metric_series().values())


def unknown(names: set[str], known: set[str]) -> list[str]:
    return sorted(names - known)


def test_promtool_accepts_the_configuration_and_its_rules() -> None:
    out = promtool("check", "config", str(CONFIG))
    assert "1 rule files found" in out, out


def test_promtool_accepts_the_alert_rules() -> None:
    out = promtool("check", "rules", str(ALERTS))
    assert f"{len(alert_rules())} rules found" in out, out


def test_the_alert_rules_unit_tests_pass() -> None:
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    # The rules that are more than one comparison: max across processes, a delta, the
    # runner's lease, a sum over results.
    assert tested >= {
        "VigilQueueBackingUp",
        "VigilDeadLetterGrowing",
        "VigilRunnerNotRunning",
        "VigilVerificationFailures",
    }
    promtool("test", "rules", str(ALERT_TESTS))


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool has no expression checker of its own: check them as recording rules.
    exprs = dashboard_exprs()
    rules = []
    for n, expr in enumerate(exprs):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:panel_query:{n}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", str(path))
    assert f"{len(exprs)} rules found" in out, out


def test_the_scrape_targets_are_vigils_default_ports() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [ALERTS.name]
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    defaults = Settings.model_fields
    assert targets == {
        "vigil-api": [f"127.0.0.1:{defaults['port'].default}"],
        "vigil-worker": [f"127.0.0.1:{defaults['worker_metrics_port'].default}"],
        "vigil-remediator": [f"127.0.0.1:{defaults['remediator_port'].default}"],
    }


def test_the_alert_rules_query_only_metrics_vigil_exposes() -> None:
    used = {name for rule in alert_rules() for name in METRIC_NAME.findall(rule["expr"])}
    assert used, "no Vigil metric found in the alert rules"
    assert not unknown(used, series()), f"not exposed by Vigil: {unknown(used, series())}"


def test_the_dashboard_queries_only_metrics_vigil_exposes() -> None:
    used = {name for expr in dashboard_exprs() for name in METRIC_NAME.findall(expr)}
    assert not unknown(used, series()), f"not exposed by Vigil: {unknown(used, series())}"


def test_the_dashboard_shows_every_metric() -> None:
    queried = " ".join(dashboard_exprs())
    missing = [
        name
        for name, exposed in vigil_metric_series().items()
        if not any(re.search(rf"\b{s}\b", queried) for s in exposed)
    ]
    assert not missing, f"no dashboard panel queries {missing}"


def test_the_prose_names_only_metrics_vigil_exposes() -> None:
    # Annotations, descriptions and the README name metrics as docs/api.md does.
    known = series() | set(vigil_metric_series())
    for path in (ALERTS, DASHBOARD, DEPLOY / "README.md"):
        used = set(METRIC_NAME.findall(path.read_text()))
        assert not unknown(used, known), f"{path.name}: unknown metrics {unknown(used, known)}"


def test_every_alert_has_a_severity_and_says_what_and_why() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "VigilQueueBackingUp",
        "VigilDeadLetterGrowing",
        "VigilRunnerNotRunning",
        "VigilVerificationFailures",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule
        assert rule["annotations"]["summary"].strip(), rule
        assert rule["annotations"]["description"].strip(), rule


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "vigil-overview"
    assert dashboard["title"] == "Vigil"
    assert dashboard["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
