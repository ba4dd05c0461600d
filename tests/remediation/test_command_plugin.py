"""The ``command`` plugin, with real processes.

The plugin never uses a shell; these tests put ``sh -c`` in their own argv to build the
process trees they need.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for_async
from vigil.clock import FakeClock
from vigil.remediation.config import parse_remediations
from vigil.remediation.execute import run_remediation
from vigil.remediation.plugins.base import Plugin, PluginCall, PluginConfigError, PluginFailed
from vigil.remediation.plugins.command import OUTPUT_LIMIT, CommandPlugin
from vigil.remediation.wire import RemediateRequest


def call(timeout: float = 10.0, **options: Any) -> PluginCall:
    return PluginCall(
        action_id=1,
        attempt=1,
        action="restart-service",
        target="web-1",
        params={},
        options=options,
        timeout=timeout,
    )


async def fails(plugin_call: PluginCall) -> PluginFailed:
    with pytest.raises(PluginFailed) as raised:
        await CommandPlugin().run(plugin_call)
    return raised.value


async def test_success_captures_output_and_exit_code() -> None:
    argv = ["sh", "-c", "echo out; echo err >&2"]
    result = await CommandPlugin().run(call(argv=argv))
    assert result.message == "command 'sh' exited with 0"
    assert result.details == {"argv": argv, "exit_code": 0, "stdout": "out\n", "stderr": "err\n"}


async def test_a_non_allowed_exit_code_is_a_retryable_failure_with_the_output() -> None:
    failure = await fails(call(argv=["sh", "-c", "echo half-done; echo oops >&2; exit 3"]))
    assert failure.retryable is True
    assert failure.message == "command 'sh' exited with 3"
    assert failure.details["exit_code"] == 3
    assert failure.details["stdout"] == "half-done\n"
    assert failure.details["stderr"] == "oops\n"


async def test_allowed_exit_codes() -> None:
    result = await CommandPlugin().run(call(argv=["sh", "-c", "exit 3"], allowed_exit_codes=[0, 3]))
    assert result.details["exit_code"] == 3
    failure = await fails(call(argv=["true"], allowed_exit_codes=[1]))
    assert failure.details["exit_code"] == 0


async def test_death_by_signal_is_reported() -> None:
    failure = await fails(call(argv=["sh", "-c", "kill -9 $$"]))
    assert failure.retryable is True
    assert failure.message == "command 'sh' was killed by signal 9"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"argv": ["/nonexistent/vigil-test-program"]}, "No such file or directory"),
        ({"argv": ["vigil-no-such-program-on-path"]}, "No such file or directory"),
        ({"argv": ["{tmp}/not-executable"]}, "Permission denied"),
        ({"argv": ["{tmp}/not-a-program"]}, "Exec format error"),
        ({"argv": ["{tmp}"]}, "Permission denied"),
        ({"argv": ["true"], "cwd": "/nonexistent-dir"}, "/nonexistent-dir"),
    ],
)
async def test_a_program_that_cannot_start_is_a_permanent_failure(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "not-a-program").write_bytes(b"\x7fELF garbage")
    (tmp_path / "not-a-program").chmod(0o755)
    options["argv"] = [options["argv"][0].replace("{tmp}", str(tmp_path))]
    failure = await fails(call(**options))
    assert failure.retryable is False
    assert failure.message.startswith(f"command {options['argv'][0]!r} cannot be started: ")
    assert message in failure.message


async def test_output_is_truncated_but_drained() -> None:
    # 1 MB on stdout: far more than a pipe holds, so the child only exits if it is read.
    result = await CommandPlugin().run(call(argv=["sh", "-c", "head -c 1000000 /dev/zero"]))
    stdout = result.details["stdout"]
    assert stdout.startswith("\0" * OUTPUT_LIMIT)
    assert stdout.endswith(f"[... {1_000_000 - OUTPUT_LIMIT} more bytes not kept]")


async def test_stdin_is_closed() -> None:
    result = await CommandPlugin().run(call(argv=["cat"], timeout=5))
    assert result.details["stdout"] == ""


async def test_environment_without_vigil_settings_plus_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIGIL_REMEDIATOR_SECRET", "s3cret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://root@db/vigil")
    monkeypatch.setenv("KEEP_ME", "kept")
    script = 'echo "${VIGIL_REMEDIATOR_SECRET-unset} ${DATABASE_URL-unset} $KEEP_ME $EXTRA"'
    result = await CommandPlugin().run(call(argv=["sh", "-c", script], env={"EXTRA": "x"}))
    assert result.details["stdout"] == "unset unset kept x\n"


async def test_cwd(tmp_path: Path) -> None:
    result = await CommandPlugin().run(call(argv=["pwd"], cwd=str(tmp_path)))
    assert result.details["stdout"] == f"{tmp_path}\n"


async def test_rendered_numbers_become_words_unless_they_read_as_options() -> None:
    result = await CommandPlugin().run(call(argv=["echo", 5, 0.5, True]))
    assert result.details["stdout"] == "5 0.5 true\n"
    failure = await fails(call(argv=["echo", -1]))
    assert failure.retryable is False
    assert "reads as an option" in failure.message


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def _wait_gone(pids: list[int]) -> None:
    async def gone() -> bool:
        return not any(_alive(pid) for pid in pids)

    await wait_for_async(gone, what=lambda: f"{[p for p in pids if _alive(p)]} to end")


# A shell that records its own pid and a background child's, then waits: a process tree.
TREE = 'echo $$ > "$1"; sleep 30 & echo $! >> "$1"; sleep 30'
# The leader exits at once, leaving a child that holds the output pipe open.
ORPHAN = 'sleep 30 & echo $! > "$1"'


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


@pytest.mark.parametrize("script", [TREE, ORPHAN])
async def test_own_deadline_kills_the_whole_process_group(tmp_path: Path, script: str) -> None:
    pidfile = tmp_path / "pids"
    started = time.monotonic()
    failure = await fails(call(timeout=0.5, argv=["sh", "-c", script, "sh", str(pidfile)]))
    assert time.monotonic() - started < 15  # killed, not waited for its 30 s sleep
    assert failure.retryable is True
    assert failure.message == "command 'sh' timed out after 0.5s"
    assert failure.details["argv"][:2] == ["sh", "-c"]
    pids = _pids(pidfile)
    assert len(pids) == (2 if script == TREE else 1)
    await _wait_gone(pids)


async def test_the_callers_deadline_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    plugin_call = call(timeout=30, argv=["sh", "-c", TREE, "sh", str(pidfile)])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await CommandPlugin().run(plugin_call)
    pids = _pids(pidfile)
    assert len(pids) == 2
    await _wait_gone(pids)


async def test_through_run_remediation_with_placeholders_and_a_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    text = f"""
remediations:
  - action: restart-service
    plugin: command
    with: {{argv: [echo, restart, "{{target}}", "--count={{params.count}}"], timeout: 5}}
  - action: hang
    plugin: command
    timeout: 0.5
    with: {{argv: [sh, -c, '{TREE}', sh, "{pidfile}"]}}
"""
    plugins: dict[str, Plugin] = {"command": CommandPlugin()}
    remediations = parse_remediations(text, source="t", plugins=plugins)

    async def run(action: str, target: str) -> Any:
        request = RemediateRequest(
            action_id=5, attempt=1, action=action, target=target, params={"count": 2}
        )
        return await run_remediation(
            request, remediations=remediations, plugins=plugins, clock=FakeClock()
        )

    result = await run("restart-service", "web-1")
    assert result.status == "success"
    assert result.details["stdout"] == "restart web-1 --count=2\n"

    result = await run("restart-service", "-rf")
    assert (result.status, result.retryable) == ("failed", False)

    result = await run("hang", "web-1")
    assert (result.status, result.retryable) == ("failed", True)
    assert "timed out after 0.5s" in result.message
    await _wait_gone(_pids(pidfile))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "`argv` is required"),
        ({"argv": "systemctl restart x"}, "`argv` is required"),
        ({"argv": []}, "`argv` is required"),
        ({"argv": [""]}, "must not be empty"),
        ({"argv": ["ls", None]}, "`argv[1]` must be a string"),
        ({"argv": ["ls", 5]}, "`argv[1]` must be a string"),
        ({"argv": ["{target}"]}, "must not be a placeholder"),
        ({"argv": ["ls"], "env": {"A": 1}}, "`env.A` must be a string"),
        ({"argv": ["ls"], "env": ["A=1"]}, "`env` must map"),
        ({"argv": ["ls"], "env": {"A=B": "1"}}, "may not contain '='"),
        ({"argv": ["ls"], "cwd": ""}, "`cwd` must be a directory path"),
        ({"argv": ["ls"], "allowed_exit_codes": []}, "`allowed_exit_codes`"),
        ({"argv": ["ls"], "allowed_exit_codes": [256]}, "`allowed_exit_codes`"),
        ({"argv": ["ls"], "allowed_exit_codes": [True]}, "`allowed_exit_codes`"),
        ({"argv": ["ls"], "shell": True}, "unknown option 'shell'"),
    ],
)
def test_check_refuses_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginConfigError) as raised:
        CommandPlugin().check(options)
    assert message in str(raised.value)


def test_check_accepts_placeholders_in_arguments_env_and_cwd() -> None:
    CommandPlugin().check(
        {
            "argv": ["/usr/bin/systemctl", "restart", "{target}", "--n={params.n}"],
            "env": {"TARGET": "{target}"},
            "cwd": "/srv/{target}",
            "allowed_exit_codes": [0, 3],
        }
    )


def test_no_leftover_children() -> None:
    # Every test above reaps what it started (the plugin waits on each process it kills).
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
