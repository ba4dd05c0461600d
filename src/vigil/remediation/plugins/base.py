"""The one interface every remediation plugin implements.

A plugin is a class with a ``name``, a ``check`` of its configuration (the ``with:`` block
of a remediation, after placeholders are rendered) and an async ``run``. It reports the
outcome by returning a :class:`PluginResult` (success) or raising :class:`PluginFailed`
(``retryable`` says whether another attempt could help). Anything else it raises is a bug
and counts as a retryable failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from vigil.strict import unknown_field


@dataclass(frozen=True, slots=True)
class PluginCall:
    """What a plugin is asked to do: the action, its target and the rendered options."""

    action_id: int
    attempt: int
    action: str
    target: str
    params: dict[str, Any]
    options: dict[str, Any]
    timeout: float


@dataclass(frozen=True, slots=True)
class PluginResult:
    """A successful change: a one-line message and structured details."""

    message: str
    details: dict[str, Any] = field(default_factory=dict)


class PluginFailed(Exception):
    """The change did not happen. ``retryable=False`` means another attempt cannot help."""

    def __init__(
        self, message: str, *, retryable: bool = True, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.details = details or {}


class PluginConfigError(ValueError):
    """A remediation's ``with:`` options are not valid for its plugin."""


def refuse_unknown_options(plugin: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    """:class:`PluginConfigError` naming each option not in ``known``, with the likely
    intended one (``log: unknown option 'msg' (did you mean 'message'?)``)."""
    known = sorted(known)
    unknown = sorted(set(options) - set(known))
    if unknown:
        problems = "; ".join(unknown_field(name, known, kind="option") for name in unknown)
        raise PluginConfigError(f"{plugin}: {problems}; known: {', '.join(known)}")


class Plugin(Protocol):
    """A kind of change Vigil can make."""

    name: ClassVar[str]

    def check(self, options: dict[str, Any]) -> None:
        """Raise :class:`PluginConfigError` naming the problem if ``options`` are invalid.

        Called on the options as written in the file (placeholders not yet rendered) when a
        remediations file is loaded, so a bad file is refused before anything runs.
        """

    async def run(self, call: PluginCall) -> PluginResult:
        """Make the change, within ``call.timeout`` seconds; raise :class:`PluginFailed`."""
