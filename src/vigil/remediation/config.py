"""The remediations file: which plugin makes which change, for which targets, how often retried.

INTERFACE SKETCH (to be completed): the names and signatures below are what the worker, the
remediator service and the API use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.errors import InvalidInput


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
    timeout: float = 30.0
    retries: Retries = field(default_factory=Retries)


@dataclass(frozen=True)
class Remediations:
    """The whole file, in order; the first entry matching an (action, target) wins."""

    source: str
    entries: tuple[Remediation, ...]

    def resolve(self, action: str, target: str) -> Remediation | None:
        """The first entry for ``action`` whose ``targets`` glob matches ``target``."""
        raise NotImplementedError

    def knows(self, action: str) -> bool:
        """Whether any entry names ``action`` (whatever its targets)."""
        raise NotImplementedError


def load_remediations(path: Path | None) -> Remediations:
    """Read and validate ``path`` (the packaged default file for ``None``).

    Raises :class:`RemediationsInvalid` naming the file, the entry and the problem.
    """
    raise NotImplementedError
