"""The `vigil` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from vigil.cli import app
from vigil.local import Server, clean_env, free_port, stop, wait_healthy
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


def test_validate_names_an_unknown_key_and_the_likely_intended_one(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "policies:\n"
        "  - name: guarded\n"
        "    condition: {type: threshold, metric: cpu, operator: '>', threshold: 90, fro: 1m}\n"
        "    action: scale-up\n"
        "    aproval_required: true\n"
        "    cooldown: 10m\n"
    )
    result = runner.invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"invalid: {path}: policies[0].condition.threshold: unknown field 'fro' (did you mean "
        "'for'?); policies[0]: unknown field 'aproval_required' (did you mean "
        "'approval_required'?); policies[0]: unknown field 'cooldown' (did you mean "
        "'cooldown_seconds'?)\n"
    )
    path.write_text("polices: []\n")
    result = runner.invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 1
    assert "unknown field 'polices' (did you mean 'policies'?)" in result.output


POLICY = (
    "  - {{name: {name}, condition: {{type: metric_below, metric: m, threshold: 1}}, {rest}}}\n"
)


def test_validate_checks_actions_against_the_remediations_as_serve_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(
        "policies:\n"
        + POLICY.format(name="known", rest="action: scale-up")
        + "\n"
        + POLICY.format(name="unknown", rest="action: reboot, escalate: [scale-up, page]")
        + "\n"
    )
    result = runner.invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"invalid: policy 'unknown' in {path} uses action 'reboot', which no remediation in "
        "packaged default remediations handles (VIGIL_REMEDIATIONS_FILE)\n"
        f"invalid: policy 'unknown' in {path} escalates to action 'page', which no remediation "
        "in packaged default remediations handles (VIGIL_REMEDIATIONS_FILE)\n"
    )
    # vigil serve refuses the same file, with the same words.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vigil.cli._configure_logging", lambda settings: None)
    monkeypatch.setenv("VIGIL_POLICIES_FILE", str(path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'vigil.db'}")
    served = runner.invoke(app, ["serve"])
    assert served.exit_code == 2
    assert served.output == (
        f"invalid setting VIGIL_POLICIES_FILE: policy 'unknown' in {path} uses action 'reboot',"
        " which no remediation in packaged default remediations handles"
        " (VIGIL_REMEDIATIONS_FILE)\n"
    )
    # With a remediations file that handles them, both pass.
    remediations = tmp_path / "remediations.yaml"
    remediations.write_text(
        "remediations:\n"
        + "".join(f"  - {{action: {a}, plugin: log}}\n" for a in ("scale-up", "reboot", "page"))
    )
    result = runner.invoke(
        app, ["policies", "validate", str(path), "--remediations", str(remediations)]
    )
    assert result.exit_code == 0, result.output
    assert f"2 valid policies (actions checked against {remediations})" in result.output
    remediations.write_text("remediations:\n  - {action: reboot, plugin: log, timout: 5}\n")
    result = runner.invoke(
        app, ["policies", "validate", str(path), "--remediations", str(remediations)]
    )
    assert result.exit_code == 1
    assert "unknown field 'timout' (did you mean 'timeout'?)" in result.output


@pytest.mark.parametrize("text", ["", "policies: []\n", "# nothing yet\n"])
def test_validate_reports_a_file_without_policies(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["policies", "validate", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"invalid: {path}: no policies (the file is empty or says `policies: []`);"
        " --allow-empty accepts that\n"
    )
    result = runner.invoke(app, ["policies", "validate", str(path), "--allow-empty"])
    assert result.exit_code == 0
    assert result.output == f"{path}: no policies (the file is empty or says `policies: []`)\n"


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vigil", "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0
    for command in ("serve", "db", "policies"):
        assert command in proc.stdout


def test_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.db'}")
    created = runner.invoke(app, ["keys", "create", "deploy-bot", "--role", "operator"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("vk_")
    assert len(key) > 40
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0
    assert "deploy-bot\toperator" in listed.output
    assert key not in listed.output
    assert "active" in listed.output
    duplicate = runner.invoke(app, ["keys", "create", "deploy-bot"])
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output
    bad_role = runner.invoke(app, ["keys", "create", "x", "--role", "root"])
    assert bad_role.exit_code == 2
    revoked = runner.invoke(app, ["keys", "revoke", "deploy-bot"])
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list"]).output
    assert runner.invoke(app, ["keys", "revoke", "ghost"]).exit_code == 1


def test_serve_refuses_a_public_address_with_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'open.db'}")
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0" in result.output
    assert "vigil keys create" in result.output


@pytest.fixture
def default_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No DATABASE_URL or VIGIL_DATA_DIR: the default database, in a user data directory of
    the test's own (``$XDG_DATA_HOME/vigil``)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("VIGIL_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    return tmp_path / "data-home" / "vigil" / "vigil.db"


def test_commands_find_the_same_default_database_from_any_directory(
    default_database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, other = tmp_path / "one", tmp_path / "other"
    one.mkdir()
    other.mkdir()
    monkeypatch.chdir(one)
    created = runner.invoke(app, ["keys", "create", "ops", "--role", "admin"])
    assert created.exit_code == 0, created.output
    assert created.stderr == f"database: {default_database} (SQLite, the default data directory)\n"
    assert created.stdout.splitlines()[-1].startswith("vk_"), "stdout holds only the output"

    monkeypatch.chdir(other)
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("ops\tadmin")
    assert f"database: {default_database}" in listed.stderr
    assert default_database.exists()
    assert list(one.iterdir()) == [], "nothing in the working directory"
    assert list(other.iterdir()) == []


def test_serve_uses_the_database_the_commands_use(default_database: Path, tmp_path: Path) -> None:
    created = runner.invoke(app, ["keys", "create", "ops", "--role", "admin"])
    key = created.stdout.splitlines()[-1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    env = clean_env(XDG_DATA_HOME=str(tmp_path / "data-home"))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "vigil", "serve", "--port", str(port)],
            env=env,
            cwd=elsewhere,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server("vigil", process, port, log)
    try:
        wait_healthy(server, timeout=30)
        keys = httpx.get(f"{server.url}/api/v1/keys", headers={"X-API-Key": key}, trust_env=False)
        assert keys.status_code == 200, keys.text
        assert [k["name"] for k in keys.json()["keys"]] == ["ops"]
    finally:
        stop(server)
    first = json.loads(log.read_text().splitlines()[0])
    assert first["event"] == "database.selected"
    assert first["database"] == str(default_database)
    assert first["source"] == "the default data directory"
    assert not (elsewhere / "vigil.db").exists()


def test_audit_verify_never_creates_a_database(default_database: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 2
    assert f"there is no database at {default_database}" in result.stderr
    assert not default_database.parent.exists(), "not even the data directory"

    empty = tmp_path / "empty.db"
    empty.touch()
    result = runner.invoke(app, ["audit", "verify"], env={"DATABASE_URL": f"sqlite:///{empty}"})
    assert result.exit_code == 2
    assert f"database: {empty} (SQLite, DATABASE_URL)" in result.stderr
    assert "holds no Vigil schema" in result.stderr


@pytest.mark.parametrize("command", [["keys", "list"], ["keys", "revoke", "ops"]])
def test_commands_that_need_a_database_do_not_create_one(
    default_database: Path, command: list[str]
) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert f"there is no database at {default_database}" in result.stderr
    assert not default_database.parent.exists()


def test_vigil_data_dir_moves_the_default_database(tmp_path: Path) -> None:
    data = tmp_path / "state"
    result = runner.invoke(app, ["db", "upgrade"], env={"VIGIL_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.output
    assert result.stderr == f"database: {data / 'vigil.db'} (SQLite, VIGIL_DATA_DIR)\n"
    assert (data / "vigil.db").exists()


def test_a_missing_directory_in_database_url_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'vigil.db'}"
    result = runner.invoke(app, ["keys", "create", "ops"], env={"DATABASE_URL": url})
    assert result.exit_code == 2
    assert f"the directory {tmp_path / 'typo'} does not exist" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_the_database_named_hides_its_password() -> None:
    url = f"postgresql://vigil:s3cret@127.0.0.1:{free_port()}/vigil"  # nothing listens there
    result = runner.invoke(app, ["audit", "verify"], env={"DATABASE_URL": url})
    assert result.exit_code == 2
    assert "database: postgresql://vigil:***@127.0.0.1:" in result.stderr
    assert "s3cret" not in result.output


def test_serve_refuses_a_policy_file_with_an_unknown_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text("policies:\n" + POLICY.format(name="p", rest="action: scale-up, shadw: true"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vigil.cli._configure_logging", lambda settings: None)
    monkeypatch.setenv("VIGIL_POLICIES_FILE", str(path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'vigil.db'}")
    served = runner.invoke(app, ["serve"])
    assert served.exit_code == 2
    assert served.output == (
        f"invalid setting VIGIL_POLICIES_FILE: {path}: policies[0]: unknown field 'shadw' "
        "(did you mean 'shadow'?)\n"
    )
