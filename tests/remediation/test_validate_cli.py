"""`vigil remediations validate FILE`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vigil.cli import app
from vigil.remediation.config import default_remediations_text, example_remediations_text

runner = CliRunner()


def test_validate_prints_one_line_per_entry(tmp_path: Path) -> None:
    path = tmp_path / "remediations.yaml"
    path.write_text(
        "remediations:\n"
        "  - action: restart-service\n"
        "    targets: 'web-*'\n"
        "    plugin: command\n"
        "    with: {argv: [systemctl, restart, '{target}'], timeout: 45}\n"
        "    retries: {max_attempts: 5, backoff_seconds: 2}\n"
        "  - {action: scale-up, plugin: log}\n"
    )
    result = runner.invoke(app, ["remediations", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{path}: 2 valid remediations",
        "  restart-service on 'web-*': command, timeout 45s, "
        "retries max_attempts=5 backoff=2 max_backoff=default",
        "  scale-up on '*': log, timeout 30s, "
        "retries max_attempts=default backoff=default max_backoff=default",
    ]


def test_validate_accepts_the_packaged_files(tmp_path: Path) -> None:
    pytest.importorskip("lightkube")  # the example's kubernetes entries need the extra
    for name, text in (
        ("default", default_remediations_text()),
        ("example", example_remediations_text()),
    ):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        result = runner.invoke(app, ["remediations", "validate", str(path)])
        assert result.exit_code == 0, result.output


def test_validate_names_the_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "remediations:\n"
        "  - {action: scale-up, plugin: log}\n"
        "  - {action: restart-service, plugin: command, with: {argv: ['{target}']}}\n"
    )
    result = runner.invoke(app, ["remediations", "validate", str(path)])
    assert result.exit_code == 1
    assert (
        f"invalid: {path}: remediations[1] (action 'restart-service'): with: command: "
        "`argv[0]` (the program) must not be a placeholder"
    ) in result.output

    result = runner.invoke(app, ["remediations", "validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "cannot read remediations file" in result.output


def test_python_dash_m_lists_the_command(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("remediations:\n  - {action: custom, plugin: log}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "vigil", "remediations", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "  custom on '*': log, timeout 30s" in proc.stdout
