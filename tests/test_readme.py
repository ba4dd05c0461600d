"""The README's walk-through works: each curl command, run against a real `vigil serve`
started as the walk-through says, answers what the README shows after it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vigil.local import clean_env, free_port, running

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def walkthrough() -> list[tuple[str, Any]]:
    """(command, expected JSON or None) for every curl block (or wait-then-curl block) of the
    Walk-through section."""
    text = README.read_text()
    section = text.split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    blocks = BLOCK.findall(section)
    steps = []
    for i, (lang, body) in enumerate(blocks):
        if lang == "bash" and body.lstrip().startswith(("curl", "until")):
            expected = None
            if i + 1 < len(blocks) and blocks[i + 1][0] == "json":
                expected = json.loads(blocks[i + 1][1])
            steps.append((body, expected))
    return steps


def contains(actual: Any, expected: Any, path: str = "$") -> None:
    """Every key and value the README shows is in the actual answer (which may have more)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing from {actual!r}"
            contains(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{path}: {actual!r}"
        for n, (a, e) in enumerate(zip(actual, expected, strict=True)):
            contains(a, e, f"{path}[{n}]")
    else:
        assert actual == expected, f"{path}: README shows {expected!r}, Vigil answered {actual!r}"


def start_command() -> str:
    """The command the Walk-through starts Vigil with (its first bash block)."""
    section = README.read_text().split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    lang, body = BLOCK.findall(section)[0]
    assert lang == "bash"
    assert body.strip().endswith("make run"), body
    return str(body).strip()


def test_walkthrough_covers_ingest_policies_and_actions() -> None:
    commands = " ".join(command for command, _ in walkthrough())
    for path in ("/api/v1/ingest", "/api/v1/policies", "/api/v1/actions"):
        assert path in commands


@pytest.mark.timeout(120)
def test_readme_curl_examples(tmp_path: Path) -> None:
    """Twice in a row from the same directory, each time started as the README says (with
    ``make run`` standing for the ``vigil serve`` it runs): the second run finds a fresh
    database as the first did, and neither leaves one in the working directory."""
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    for run in (1, 2):
        temp = tmp_path / f"tmp-{run}"  # where the README's `mktemp -d` makes the data dir
        temp.mkdir()
        port = free_port()
        serve = f"{shlex.quote(sys.executable)} -m vigil serve --port {port}"
        command = start_command().replace("make run", serve)
        env = clean_env(TMPDIR=str(temp))
        with running("vigil", ["bash", "-c", command], env, port, workdir, timeout=30) as server:
            for step, expected in walkthrough():
                step = step.replace("http://127.0.0.1:8000", server.url)
                proc = subprocess.run(
                    ["bash", "-c", step], capture_output=True, text=True, timeout=30
                )
                assert proc.returncode == 0, f"run {run}: {step}\n{proc.stderr}"
                if expected is not None:
                    contains(json.loads(proc.stdout), expected)
        [database] = temp.glob("*/vigil.db")
        lines = [json.loads(line) for line in server.log.read_text().splitlines()]
        *_, selected = (line for line in lines if line["event"] == "database.selected")
        assert (selected["database"], selected["source"]) == (str(database), "VIGIL_DATA_DIR")
        assert not list(workdir.glob("vigil.db*")), "nothing in the working directory"
