"""The `vigil` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from vigil.cli import app
from vigil.policy.loader import example_policies_text

runner = CliRunner()


def test_validate_accepts_the_packaged_examples(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(example_policies_text())
    result = runner.invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "6 valid policies" in result.output
    assert "high-cpu-alert: warning, enabled, auto, action scale-up" in result.output
    assert "pod-drain-required: warning, disabled, auto, action drain-pod" in result.output


def test_validate_names_each_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "policies:\n"
        "  - name: ok-policy\n"
        "    condition: {type: metric_exceeds, metric: cpu, threshold: 90}\n"
        "    action: scale-up\n"
        "  - name: broken\n"
        "    severity: urgent\n"
        "    condition: {type: metric_exceeds, metric: cpu, threshold: high}\n"
        "    action: scale-up\n"
    )
    result = runner.invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 1
    assert "policies[1].severity" in result.output
    assert "policies[1].condition.metric_exceeds.threshold" in result.output


def test_validate_refuses_duplicates_and_bad_yaml(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    policy = "  - {name: a, condition: {type: metric_below, metric: m, threshold: 1}, action: x}\n"
    dup.write_text("policies:\n" + policy + policy)
    result = runner.invoke(app, ["policies", "validate", str(dup)])
    assert result.exit_code == 1
    assert "appears more than once" in result.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: [unclosed\n")
    result = runner.invoke(app, ["policies", "validate", str(bad)])
    assert result.exit_code == 1
    assert "not valid YAML" in result.output

    result = runner.invoke(app, ["policies", "validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "cannot read policy file" in result.output


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vigil", "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0
    for command in ("serve", "db", "policies"):
        assert command in proc.stdout
