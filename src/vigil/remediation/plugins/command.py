"""The ``command`` plugin: runs one allowlisted program, never through a shell.

Options:

- ``argv`` (required): the program and its arguments, a non-empty list of strings. The
  program (``argv[0]``) is written out in the file, never a placeholder; arguments may hold
  placeholders (``"{target}"``), whose values cannot start options or name paths.
- ``env``: extra environment variables (names to strings). The program inherits the
  service's environment without Vigil's own settings (``VIGIL_*``, ``DATABASE_URL``,
  ``REDIS_URL``: the remediator's secret and database credentials stay with Vigil).
- ``cwd``: the working directory.
- ``allowed_exit_codes``: the exit codes that count as success (default ``[0]``).

The program runs in a session (process group) of its own, with stdin closed; stdout and
stderr are captured (at most :data:`OUTPUT_LIMIT` bytes of each) into the details. The
command is finished when it has exited and closed its output. When the deadline passes (its
own, ``PluginCall.timeout``, or the caller cancelling it) the whole process group is killed
with SIGKILL and reaped, so nothing it started lives on.

Outcomes: an allowed exit code is a success; any other is a retryable failure carrying the
output; a program that does not exist or cannot be executed is a permanent failure; a
timeout is a retryable failure ("timed out after Ns").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vigil.remediation.placeholders import has_placeholder
from vigil.remediation.plugins.base import (
    PluginCall,
    PluginConfigError,
    PluginFailed,
    PluginResult,
    refuse_unknown_options,
)

OPTIONS = frozenset({"argv", "env", "cwd", "allowed_exit_codes"})
OUTPUT_LIMIT = 64 * 1024
# Settings Vigil reads from the environment; a remediation command has no business with them.
_PRIVATE_PREFIXES = ("VIGIL_",)
_PRIVATE_NAMES = frozenset({"DATABASE_URL", "REDIS_URL"})
_CHUNK = 16 * 1024
# Reasons a program cannot start that another attempt would meet again.
_CANNOT_START = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENOEXEC, errno.EISDIR}
)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """Validated options of one command."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    allowed_exit_codes: frozenset[int]


def parse_options(options: dict[str, Any], *, rendered: bool) -> CommandSpec:
    """Validate ``options``; raise PluginConfigError naming the first problem.

    After rendering (``rendered``), argv and env values that placeholders turned into
    numbers or booleans become text; a number that would start an argument with ``-`` is
    refused, since it would read as an option.
    """
    refuse_unknown_options("command", options, OPTIONS)
    argv = options.get("argv")
    if not isinstance(argv, list) or not argv:
        raise PluginConfigError("command: `argv` is required: a non-empty list of strings")
    words = [_word(f"argv[{index}]", value, rendered) for index, value in enumerate(argv)]
    if not words[0]:
        raise PluginConfigError("command: `argv[0]` (the program) must not be empty")
    if not rendered and has_placeholder(words[0]):
        raise PluginConfigError("command: `argv[0]` (the program) must not be a placeholder")

    env = options.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(key, str) and key for key in env):
        raise PluginConfigError("command: `env` must map variable names to strings")
    env_text = {key: _word(f"env.{key}", value, rendered) for key, value in env.items()}
    if any("=" in key or "\x00" in key for key in env_text):
        raise PluginConfigError("command: `env` names may not contain '=' or NUL")

    cwd = options.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd or "\x00" in cwd):
        raise PluginConfigError("command: `cwd` must be a directory path")

    codes = options.get("allowed_exit_codes", [0])
    if (
        not isinstance(codes, list)
        or not codes
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in codes)
    ):
        raise PluginConfigError(
            "command: `allowed_exit_codes` must be a non-empty list of exit codes (0 to 255)"
        )
    return CommandSpec(argv=words, env=env_text, cwd=cwd, allowed_exit_codes=frozenset(codes))


def _word(where: str, value: Any, rendered: bool) -> str:
    if isinstance(value, str):
        if "\x00" in value:
            raise PluginConfigError(f"command: `{where}` must not contain NUL")
        return value
    if rendered and isinstance(value, bool):
        return "true" if value else "false"
    if rendered and isinstance(value, int | float):
        text = str(value)
        if text.startswith("-"):
            raise PluginConfigError(
                f"command: `{where}` would be {text!r}, which reads as an option"
            )
        return text
    raise PluginConfigError(f"command: `{where}` must be a string")


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """The service's environment without Vigil's settings, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        # Upper-cased: Vigil reads its settings whatever their case (vigil_remediator_secret).
        if not name.upper().startswith(_PRIVATE_PREFIXES) and name.upper() not in _PRIVATE_NAMES
    }
    env.update(extra)
    return env


@dataclass(slots=True)
class _Capture:
    """The first OUTPUT_LIMIT bytes of a stream and how many more were dropped."""

    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        # Keep reading past the limit: a child blocked on a full pipe would never exit.
        if stream is None:
            return
        while chunk := await stream.read(_CHUNK):
            room = OUTPUT_LIMIT - len(self.data)
            self.data += chunk[:room]
            self.dropped += max(0, len(chunk) - room)

    def text(self) -> str:
        text = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[... {self.dropped} more bytes not kept]"
        return text


class CommandPlugin:
    """Runs ``argv`` as a subprocess in its own process group."""

    name: ClassVar[str] = "command"

    def check(self, options: dict[str, Any]) -> None:
        """Raise PluginConfigError naming the first problem in ``options``."""
        parse_options(options, rendered=False)

    async def run(self, call: PluginCall) -> PluginResult:
        """Run the command; raise PluginFailed unless it exits with an allowed code."""
        try:
            spec = parse_options(call.options, rendered=True)
        except PluginConfigError as exc:
            raise PluginFailed(str(exc), retryable=False) from exc
        program = spec.argv[0]
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_environment(spec.env),
                cwd=spec.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            if exc.errno not in _CANNOT_START:
                # e.g. EAGAIN, ENOMEM: too many processes right now; another attempt may do.
                raise PluginFailed(
                    f"command {program!r} cannot be started: {exc.strerror or exc}",
                    details={"argv": spec.argv},
                ) from exc
            # Missing, not executable, a bad cwd: the same call cannot start it next time either.
            missing = exc.filename or program
            raise PluginFailed(
                f"command {program!r} cannot be started: {exc.strerror}: {missing}",
                retryable=False,
                details={"argv": spec.argv},
            ) from exc

        stdout, stderr = _Capture(), _Capture()

        def details(exit_code: int | None) -> dict[str, Any]:
            return {
                "argv": spec.argv,
                "exit_code": exit_code,
                "stdout": stdout.text(),
                "stderr": stderr.text(),
            }

        try:
            async with asyncio.timeout(call.timeout):
                await asyncio.gather(stdout.drain(process.stdout), stderr.drain(process.stderr))
                exit_code = await process.wait()
        except TimeoutError:
            await _kill_group(process)
            raise PluginFailed(
                f"command {program!r} timed out after {call.timeout:g}s",
                details=details(process.returncode),
            ) from None
        except BaseException:
            # Cancelled by the caller (its own deadline, a shutdown): leave nothing running.
            await _kill_group(process)
            raise

        if exit_code in spec.allowed_exit_codes:
            return PluginResult(f"command {program!r} exited with {exit_code}", details(exit_code))
        reason = (
            f"was killed by signal {-exit_code}" if exit_code < 0 else f"exited with {exit_code}"
        )
        raise PluginFailed(f"command {program!r} {reason}", details=details(exit_code))


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the process's whole group (its session) and reap the process."""
    # start_new_session made the child a group leader: its pid is the group id. Kill even if
    # the leader has exited already, for the children it may have left behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    # Shielded: a second cancellation must not leave a zombie or an unclosed transport.
    await asyncio.shield(process.wait())
