"""The closed list of suppression reasons, used verbatim in responses, decisions and metrics."""

from __future__ import annotations

from enum import StrEnum


class Suppressed(StrEnum):
    """Why a violation did not become an action."""

    ALREADY_OPEN = "action already open"
    """An action for the same (policy, target) is still pending or running."""
    COOLDOWN = "cooldown"
    """The previous action for the pair ended less than ``cooldown_seconds`` ago."""
    CIRCUIT_OPEN = "circuit open"
    MAX_CONCURRENT_TARGETS = "max concurrent targets"
    SILENCED = "silenced"
    """An active silence matches the policy, target and tags (``/api/v1/silences``)."""
    PAUSED = "paused"
    """Automation is paused globally (``POST /api/v1/automation/pause``)."""
    SHADOW = "shadow"
    """The policy is in shadow mode: this is what it would have done."""
    NOT_AUTO_REMEDIATED = "not auto-remediated"
    """The policy records violations but does not act on them."""
    DISABLED = "disabled"


STICKY = frozenset({Suppressed.COOLDOWN, Suppressed.CIRCUIT_OPEN})
"""Suppressions that hold for the rest of their episode (the others are tried again)."""

LIFTING = frozenset(
    {
        Suppressed.ALREADY_OPEN,
        Suppressed.MAX_CONCURRENT_TARGETS,
        Suppressed.SILENCED,
        Suppressed.PAUSED,
    }
)
"""Suppressions that end by themselves (the action closes, the blast radius frees up, the
silence ends, automation resumes): a source that does not judge its pairs every runner pass
(Alertmanager's alerts) tries an episode held back by one again when it next hears of it.
The others are held for the episode (:data:`STICKY`) or by the policy itself (shadow, not
auto-remediated, disabled), so hearing of it again changes nothing."""


def outcome_of(reason: Suppressed | None) -> str:
    """A decision's outcome: ``acted`` (no reason), ``shadow``, ``recorded`` (a policy that
    does not remediate) or ``suppressed``."""
    if reason is None:
        return "acted"
    if reason is Suppressed.SHADOW:
        return "shadow"
    if reason is Suppressed.NOT_AUTO_REMEDIATED:
        return "recorded"
    return "suppressed"
