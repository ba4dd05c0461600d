"""The README's walk-through works: each curl command, run against a real `vigil serve`
on its embedded defaults, answers what the README shows after it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import running_vigil
from vigil.local import clean_env, free_port

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


def test_walkthrough_has_the_seed_examples() -> None:
    commands = " ".join(command for command, _ in walkthrough())
    for path in ("/api/v1/ingest", "/api/v1/policies", "/api/v1/actions"):
        assert path in commands


@pytest.mark.timeout(120)
def test_readme_curl_examples(tmp_path: Path) -> None:
    port = free_port()
    with running_vigil(tmp_path, clean_env(), port) as url:
        for command, expected in walkthrough():
            command = command.replace("http://127.0.0.1:8000", url)
            proc = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30
            )
            assert proc.returncode == 0, f"{command}\n{proc.stderr}"
            if expected is not None:
                contains(json.loads(proc.stdout), expected)
    assert (tmp_path / "vigil.db").exists(), "the embedded default is ./vigil.db"
