"""``vigil policies validate`` with ``alert`` policies."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from vigil.cli import app

POLICIES = """\
policies:
  - name: high-cpu
    target: "web-*"
    condition:
      type: alert
      alertname: HighCPU
      matchers: {severity: critical, team: "=~web|api"}
    action: restart-service
    target_label: host
    verify: {within_seconds: 120}
"""


def test_validate_accepts_an_alert_policy_and_names_a_bad_matcher(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICIES)
    result = CliRunner().invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "high-cpu: warning, enabled, manual, action restart-service" in result.output
    path.write_text(POLICIES.replace('"=~web|api"', '"=~web|("'))
    result = CliRunner().invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 1, result.output
    assert "matchers.team" in result.output
