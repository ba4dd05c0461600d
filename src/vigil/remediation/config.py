"""The remediations file: which plugin makes which change, for which targets, how often retried.

A YAML file with one top-level ``remediations:`` list; each entry::

    - action: restart-service     # the policy's action name
      targets: "web-*"            # glob on the target (fnmatch, case-sensitive); default "*"
      plugin: command             # a registered plugin (see vigil.remediation.registry)
      with: {argv: [systemctl, restart, "{target}"]}   # the plugin's options
      timeout: 30                 # seconds (or "30s", "2m"); default 30
      retries: {max_attempts: 5, backoff_seconds: 2, max_backoff_seconds: 60}

The first entry whose ``action`` equals and whose ``targets`` glob matches wins.

Timeout rule: an entry has one deadline, for every plugin. Write it as ``timeout:`` on the
entry, or (as a command's options often do) as ``timeout:`` inside ``with:``; the latter is moved
to the entry, so plugins never see it in their options and read ``PluginCall.timeout``
instead. Giving both is refused.

Placeholders in ``with:`` follow :mod:`vigil.remediation.placeholders`; unknown ones are
refused here, when the file is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ConfigDict, Field, StringConstraints, ValidationError

from vigil.durations import Duration, PositiveDuration
from vigil.errors import InvalidInput
from vigil.policy.models import ActionName
from vigil.remediation.placeholders import PlaceholderError, check_templates
from vigil.remediation.plugins.base import Plugin, PluginConfigError
from vigil.strict import UNKNOWN_FIELD, StrictModel, field_path, unknown_field
from vigil.text import JsonObject, Name

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_FILE = "default_remediations.yaml"
EXAMPLE_FILE = "example_remediations.yaml"


class RemediationsInvalid(InvalidInput):
    """A remediations file (or one entry of it) does not validate; the message names where."""


@dataclass(frozen=True, slots=True)
class Retries:
    """Per-remediation overrides of the worker's retry settings (``None``: use the setting)."""

    max_attempts: int | None = None
    backoff_seconds: float | None = None
    max_backoff_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Remediation:
    """One entry of the file: ``action`` on targets matching ``targets`` runs ``plugin``."""

    action: str
    targets: str
    plugin: str
    options: dict[str, Any] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    retries: Retries = field(default_factory=Retries)

    def matches(self, action: str, target: str) -> bool:
        """Whether this entry applies to ``action`` on ``target``."""
        return self.action == action and fnmatchcase(target, self.targets)


@dataclass(frozen=True)
class Remediations:
    """The whole file, in order; the first entry matching an (action, target) wins."""

    source: str
    entries: tuple[Remediation, ...]

    def resolve(self, action: str, target: str) -> Remediation | None:
        """The first entry for ``action`` whose ``targets`` glob matches ``target``."""
        for entry in self.entries:
            if entry.matches(action, target):
                return entry
        return None

    def knows(self, action: str) -> bool:
        """Whether any entry names ``action`` (whatever its targets)."""
        return any(entry.action == action for entry in self.entries)

    @property
    def actions(self) -> list[str]:
        """Every action named in the file, in first-seen order."""
        return list(dict.fromkeys(entry.action for entry in self.entries))


# -- the file's schema --------------------------------------------------------------------


class _Strict(StrictModel):
    # strict: YAML's `max_attempts: "5"` or `true` is a mistake to report, not to coerce.
    model_config = ConfigDict(strict=True, frozen=True)


class _RetriesSpec(_Strict):
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    backoff_seconds: Duration | None = None
    max_backoff_seconds: Duration | None = None


class _EntrySpec(_Strict):
    action: ActionName
    targets: Name = "*"
    plugin: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    with_: JsonObject = Field(default_factory=dict, alias="with")
    timeout: PositiveDuration | None = None
    retries: _RetriesSpec = Field(default_factory=_RetriesSpec)


def _describe(error: Any) -> str:
    """One pydantic error as ``field: problem``; an unknown key as ``parent: unknown field
    'x' (did you mean 'y'?)``."""
    loc = tuple(error["loc"])
    if error["type"] == UNKNOWN_FIELD:
        parent = field_path(loc[:-1])
        return f"{parent}: {error['msg']}" if parent else str(error["msg"])
    return f"{field_path(loc) or 'entry'}: {_message(error)}"


def _message(error: Any) -> str:
    return str(error["msg"]).removeprefix("Value error, ")


# -- loading ------------------------------------------------------------------------------


def default_remediations_text() -> str:
    """The remediations file packaged with Vigil (every built-in action name → ``log``)."""
    return resources.files("vigil.remediation").joinpath(DEFAULT_FILE).read_text("utf-8")


def example_remediations_text() -> str:
    """The commented example with real plugins, packaged beside the default file."""
    return resources.files("vigil.remediation").joinpath(EXAMPLE_FILE).read_text("utf-8")


def parse_remediations(
    text: str, *, source: str, plugins: Mapping[str, Plugin] | None = None
) -> Remediations:
    """Validate a remediations file's text against ``plugins`` (default: the installed ones).

    Raises :class:`RemediationsInvalid` naming ``source``, the entry and the field.
    """
    if plugins is None:
        from vigil.remediation.registry import load_plugins

        plugins = load_plugins()
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RemediationsInvalid(f"{source}: not valid YAML: {exc}") from exc
    expected = "expected a mapping with a top-level 'remediations:' list"
    if not isinstance(data, dict):
        raise RemediationsInvalid(f"{source}: {expected}")
    problems = [
        unknown_field(str(key), ["remediations"], kind="top-level key")
        for key in sorted(map(str, data))
        if key != "remediations"
    ]
    if "remediations" not in data:
        problems.insert(0, expected)
    if problems:
        raise RemediationsInvalid(f"{source}: {'; '.join(problems)}")
    raw_entries = data["remediations"]
    if not isinstance(raw_entries, list):
        raise RemediationsInvalid(f"{source}: 'remediations' must be a list of entries")
    entries: list[Remediation] = []
    for index, raw in enumerate(raw_entries):
        where = _entry_name(source, index, raw)
        entry = _parse_entry(raw, where=where, plugins=plugins)
        _refuse_shadowed(entry, entries, where=where)
        entries.append(entry)
    return Remediations(source=source, entries=tuple(entries))


def load_remediations(
    path: Path | None, *, plugins: Mapping[str, Plugin] | None = None
) -> Remediations:
    """Read and validate ``path`` (the packaged default file for ``None``).

    ``plugins`` are the plugins entries may name (default: every installed one).
    Raises :class:`RemediationsInvalid` naming the file, the entry and the problem.
    """
    if path is None:
        return parse_remediations(
            default_remediations_text(), source="packaged default remediations", plugins=plugins
        )
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RemediationsInvalid(f"cannot read remediations file {path}: {reason}") from exc
    return parse_remediations(text, source=str(path), plugins=plugins)


def _entry_name(source: str, index: int, raw: Any) -> str:
    action = raw.get("action") if isinstance(raw, dict) else None
    if isinstance(action, str):
        return f"{source}: remediations[{index}] (action {action!r})"
    return f"{source}: remediations[{index}]"


def _parse_entry(raw: Any, *, where: str, plugins: Mapping[str, Plugin]) -> Remediation:
    if not isinstance(raw, dict):
        raise RemediationsInvalid(f"{where}: an entry must be a mapping")
    try:
        spec = _EntrySpec.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise RemediationsInvalid(f"{where}: {'; '.join(problems)}", detail=problems) from exc

    options = dict(spec.with_)
    timeout = spec.timeout
    if "timeout" in options:
        # A command's timeout written inside `with:` is the entry's.
        if timeout is not None:
            raise RemediationsInvalid(
                f"{where}: timeout: given both on the entry and inside 'with:'; keep one"
            )
        try:
            timeout = _with_timeout(options.pop("timeout"))
        except ValueError as exc:
            raise RemediationsInvalid(f"{where}: with.timeout: {exc}") from None

    plugin = plugins.get(spec.plugin)
    if plugin is None:
        installed = ", ".join(sorted(plugins)) or "none"
        raise RemediationsInvalid(
            f"{where}: plugin: {spec.plugin!r} is not an installed plugin (installed: {installed})"
        )
    try:
        check_templates(options, where="with")
    except PlaceholderError as exc:
        raise RemediationsInvalid(f"{where}: {exc}") from None
    try:
        plugin.check(options)
    except PluginConfigError as exc:
        raise RemediationsInvalid(f"{where}: with: {exc}") from None

    return Remediation(
        action=spec.action,
        targets=spec.targets,
        plugin=spec.plugin,
        options=options,
        timeout=DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout,
        retries=Retries(
            max_attempts=spec.retries.max_attempts,
            backoff_seconds=spec.retries.backoff_seconds,
            max_backoff_seconds=spec.retries.max_backoff_seconds,
        ),
    )


class _TimeoutOnly(_Strict):
    timeout: PositiveDuration


def _with_timeout(value: Any) -> float:
    try:
        return _TimeoutOnly(timeout=value).timeout
    except ValidationError as exc:
        raise ValueError(_message(exc.errors()[0])) from None


def _refuse_shadowed(entry: Remediation, earlier: list[Remediation], *, where: str) -> None:
    """An entry after a catch-all (or identical) one for its action can never match."""
    for index, other in enumerate(earlier):
        if other.action == entry.action and other.targets in ("*", entry.targets):
            raise RemediationsInvalid(
                f"{where}: targets: never used, because remediations[{index}] already matches "
                f"action {entry.action!r} on targets {other.targets!r} (the first match wins)"
            )
