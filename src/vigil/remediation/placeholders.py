"""Placeholders in a remediation's ``with:`` options: ``{target}``, ``{params.replicas}``, ...

The rule, in full:

- Known placeholders are ``{target}``, ``{action}``, ``{action_id}``, ``{attempt}``,
  ``{params.NAME}`` and ``{tags.NAME}``. A param's NAME is letters, digits, ``_`` and ``-``,
  not starting with ``-``; a tag's NAME is one or more such words joined by single dots
  (``{tags.service.name}`` reads the tag ``service.name``). Any other ``{...}`` in a string
  is refused when the file is loaded; ``{{`` and ``}}`` stand for literal braces.
  Dictionary keys are never rendered.
- ``{tags.NAME}`` reads the tags of what fired the action: an alert's labels but the target,
  a sample's tags, a PromQL series' labels (the episode's first, for an escalation); a
  manual action carries the tags it was created with. Tag values are strings.
- A string that is exactly one placeholder is replaced by the value itself, keeping its type
  (``action_id`` and ``attempt`` are integers; a param may be a string, number or boolean),
  so a JSON body or a replica count gets a number. Inside a longer string
  (``--replicas={params.replicas}``, ``https://chat/{target}``) the value is inserted as
  text; booleans read ``true``/``false``.
- Every substituted value is checked, wherever it lands: a string must match
  :data:`SAFE_VALUE` (starts with a letter or digit; then letters, digits and ``._:@=-``;
  at most 255 characters; never ``..``), so it cannot become an option (``-rf``), a path
  (``../etc``), a second word or a shell construct (``a;b``, ``$(x)``). Numbers must be
  finite, and a negative one may not start a longer string. Lists, objects and null are
  refused.
- A value that breaks the rule, or a ``params.NAME`` or ``tags.NAME`` the action does not
  carry, fails the attempt permanently (:class:`PluginFailed` with ``retryable=False``):
  another attempt would get the same input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vigil.remediation.plugins.base import PluginFailed

SAFE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@=-]*")
MAX_VALUE_LENGTH = 255
SIMPLE_NAMES = frozenset({"target", "action", "action_id", "attempt"})
_PARAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_TAG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*")
# ``{{`` / ``}}`` are escapes; ``{...}`` (no braces inside) is a placeholder.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


class PlaceholderError(ValueError):
    """A template names a placeholder that does not exist; the message says which."""


@dataclass(frozen=True, slots=True)
class Context:
    """The values placeholders stand for, for one attempt of one action."""

    action_id: int
    attempt: int
    action: str
    target: str
    params: Mapping[str, Any]
    tags: Mapping[str, str] = field(default_factory=dict)


def _check_name(name: str) -> None:
    if name in SIMPLE_NAMES:
        return
    if name.startswith("params.") and _PARAM_NAME.fullmatch(name.removeprefix("params.")):
        return
    if name.startswith("tags.") and _TAG_NAME.fullmatch(name.removeprefix("tags.")):
        return
    known = ", ".join(f"{{{n}}}" for n in sorted(SIMPLE_NAMES))
    raise PlaceholderError(
        f"unknown placeholder {{{name}}} (known: {known}, {{params.NAME}}, {{tags.NAME}}; "
        "write {{ and }} for literal braces)"
    )


def _tokens(text: str) -> Iterator[tuple[int, int, str | None]]:
    """(start, end, placeholder name or None for an escaped brace) of each token."""
    for match in _TOKEN.finditer(text):
        yield match.start(), match.end(), match.group(1)


def check_templates(value: Any, *, where: str = "") -> None:
    """Refuse unknown placeholders anywhere in ``value``; the message names the field."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_templates(item, where=f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_templates(item, where=f"{where}.{key}" if where else str(key))
    elif isinstance(value, str):
        for _, _, name in _tokens(value):
            if name is not None:
                try:
                    _check_name(name)
                except PlaceholderError as exc:
                    raise PlaceholderError(f"{where}: {exc}" if where else str(exc)) from None


def has_placeholder(text: str) -> bool:
    """Whether ``text`` contains a placeholder (escaped braces do not count)."""
    return any(name is not None for _, _, name in _tokens(text))


def render(value: Any, context: Context) -> Any:
    """``value`` with every placeholder replaced, recursively through lists and dict values.

    Raises :class:`PluginFailed` (``retryable=False``) for a missing param or tag, or an
    unsafe value.
    """
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    return value


def _render_string(text: str, context: Context) -> Any:
    tokens = list(_tokens(text))
    if len(tokens) == 1 and tokens[0][:2] == (0, len(text)) and tokens[0][2] is not None:
        return _lookup(tokens[0][2], context)
    parts: list[str] = []
    position = 0
    for start, end, name in tokens:
        parts.append(text[position:start])
        parts.append(text[start] if name is None else _as_text(name, context, at_start=start == 0))
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _as_text(name: str, context: Context, *, at_start: bool) -> str:
    value = _lookup(name, context)
    if isinstance(value, bool):
        return "true" if value else "false"
    if at_start and isinstance(value, int | float) and value < 0:
        raise _unsafe(name, value, "a negative number at the start of a string reads as an option")
    return str(value)


def _lookup(name: str, context: Context) -> Any:
    if name == "action_id":
        return context.action_id
    if name == "attempt":
        return context.attempt
    if name == "target":
        return _checked(name, context.target)
    if name == "action":
        return _checked(name, context.action)
    if name.startswith("params."):
        key = name.removeprefix("params.")
        if key not in context.params:
            raise PluginFailed(
                f"placeholder {{{name}}}: the action has no param {key!r}",
                retryable=False,
                details={"missing_param": key},
            )
        return _checked(name, context.params[key])
    if name.startswith("tags."):
        key = name.removeprefix("tags.")
        if key not in context.tags:
            raise PluginFailed(
                f"placeholder {{{name}}}: the action has no tag {key!r}",
                retryable=False,
                details={"missing_tag": key},
            )
        return _checked(name, context.tags[key])
    raise PluginFailed(f"unknown placeholder {{{name}}}", retryable=False)  # checked at load


def _checked(name: str, value: Any) -> Any:
    """``value`` if it may be substituted, else a permanent failure saying why."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise _unsafe(name, value, "not a finite number")
        return value
    if not isinstance(value, str):
        raise _unsafe(name, value, "only strings, numbers and booleans can be substituted")
    problem = unsafe_reason(value)
    if problem is not None:
        raise _unsafe(name, value, problem)
    return value


def unsafe_reason(value: str) -> str | None:
    """Why ``value`` may not be substituted into a command, URL or request; None if it may."""
    if not value:
        return "empty"
    if len(value) > MAX_VALUE_LENGTH:
        return f"longer than {MAX_VALUE_LENGTH} characters"
    if value.startswith("-"):
        return "starts with '-' (it could be read as an option)"
    if "/" in value or ".." in value:
        return "contains '/' or '..' (it could be read as a path)"
    if SAFE_VALUE.fullmatch(value) is None:
        return "only letters, digits and . _ : @ = - are allowed, starting with a letter or digit"
    return None


def _unsafe(name: str, value: Any, reason: str) -> PluginFailed:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return PluginFailed(
        f"placeholder {{{name}}}: refused value {shown}: {reason}",
        retryable=False,
        details={"placeholder": name},
    )
