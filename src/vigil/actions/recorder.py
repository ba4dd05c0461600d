"""Record decisions: a violation passes the guards and becomes an action, or is suppressed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.store import create_action, pair_states, policy_key
from vigil.errors import ActionAlreadyOpen
from vigil.guard.decide import PairState, decide
from vigil.guard.reasons import Suppressed
from vigil.observability.audit import Actor
from vigil.policy.evaluator import Violation


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of one violation."""

    violation: Violation
    suppressed: Suppressed | None
    action: dict[str, Any] | None


async def record_violations(
    conn: AsyncConnection, *, violations: Sequence[Violation], now: datetime, actor: Actor
) -> list[Decision]:
    """Apply the guards to each violation, in order, creating actions where they allow."""
    pairs = [(policy_key(v.policy.name), v.target) for v in violations if v.policy.auto_remediate]
    states = await pair_states(conn, pairs=pairs)
    decisions: list[Decision] = []
    for violation in violations:
        policy = violation.policy
        pair = (policy_key(policy.name), violation.target)
        reason = decide(
            auto_remediate=policy.auto_remediate,
            enabled=policy.enabled,
            cooldown_seconds=policy.cooldown_seconds,
            state=states.get(pair, PairState()),
            now=now,
        )
        action = None
        if reason is None:
            try:
                action = await create_action(
                    conn,
                    now=now,
                    actor=actor,
                    dedup_key=pair[0],
                    policy_name=policy.name,
                    target=violation.target,
                    action=policy.action,
                    params=dict(policy.params),
                    severity=policy.severity,
                    trigger_value=violation.value,
                    details=_details(violation),
                    reason=f"policy {policy.name} violated",
                )
            except ActionAlreadyOpen:
                # Another process created it between our read and our insert.
                reason = Suppressed.ALREADY_OPEN
            else:
                states[pair] = PairState(open_action_id=int(action["id"]))
        decisions.append(Decision(violation, reason, action))
    return decisions


def _details(violation: Violation) -> str:
    value = "" if violation.value is None else f" (value {violation.value:g})"
    return f"{violation.policy.description or violation.policy.name}{value}"
