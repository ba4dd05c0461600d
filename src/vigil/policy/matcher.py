"""Which targets a policy applies to: ``all``/``*``, an exact name, or a glob."""

from __future__ import annotations

from fnmatch import fnmatchcase

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in pattern)


def target_matches(pattern: str, target: str) -> bool:
    """Whether a policy's ``target`` pattern selects ``target`` (case-sensitive)."""
    if pattern in ("all", "*"):
        return True
    if is_glob(pattern):
        return fnmatchcase(target, pattern)
    return pattern == target
