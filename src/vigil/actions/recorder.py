"""Record decisions: a violation passes the guards and becomes an action, or is suppressed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.automation import get_state
from vigil.actions.silences import active_rules
from vigil.actions.store import create_action, create_actions, pair_states, policy_key
from vigil.errors import ActionAlreadyOpen
from vigil.guard.decide import PairState, decide
from vigil.guard.reasons import Suppressed
from vigil.guard.silences import silencing
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
    """Apply the guards to each violation, in order, creating actions where they allow.

    The guards are decided for all violations first (a pair that gets an action is open for
    the violations after it), then the actions are created together; should another process
    have opened one of them meanwhile, they are created one by one instead, and that one is
    suppressed as ``action already open``.
    """
    pairs = [(policy_key(v.policy.name), v.target) for v in violations if v.policy.auto_remediate]
    states = await pair_states(conn, pairs=pairs)
    paused = bool(pairs) and (await get_state(conn)).paused
    rules = await active_rules(conn, now=now) if pairs else []
    reasons: list[Suppressed | None] = []
    for violation in violations:
        policy = violation.policy
        pair = (policy_key(policy.name), violation.target)
        reason = decide(
            auto_remediate=policy.auto_remediate,
            enabled=policy.enabled,
            cooldown_seconds=policy.cooldown_seconds,
            state=states.get(pair, PairState()),
            now=now,
            silenced=bool(rules)
            and silencing(
                rules, policy=policy.name, target=violation.target, tags=violation.tags, now=now
            )
            is not None,
            paused=paused,
            shadow=policy.shadow,
        )
        if reason is None:
            states[pair] = PairState(open_action_id=-1)  # opened by this violation
        reasons.append(reason)
    acting = [v for v, reason in zip(violations, reasons, strict=True) if reason is None]
    items = [_new_action(v) for v in acting]
    created: dict[int, dict[str, Any] | None] = {}
    try:
        records: list[dict[str, Any] | None] = list(
            await create_actions(conn, now=now, actor=actor, items=items)
        )
    except ActionAlreadyOpen:
        records = []
        for item in items:
            try:
                records.append(await create_action(conn, now=now, actor=actor, **item))
            except ActionAlreadyOpen:
                # Another process created it between our read and our insert.
                records.append(None)
    for violation, record in zip(acting, records, strict=True):
        created[id(violation)] = record
    decisions: list[Decision] = []
    for violation, reason in zip(violations, reasons, strict=True):
        if reason is None:
            action = created[id(violation)]
            if action is None:
                reason = Suppressed.ALREADY_OPEN
            decisions.append(Decision(violation, reason, action))
        else:
            decisions.append(Decision(violation, reason, None))
    return decisions


def _new_action(violation: Violation) -> dict[str, Any]:
    policy = violation.policy
    return {
        "dedup_key": policy_key(policy.name),
        "policy_name": policy.name,
        "target": violation.target,
        "action": policy.action,
        "params": dict(policy.params),
        "severity": policy.severity,
        "trigger_value": violation.value,
        "details": _details(violation),
        "reason": f"policy {policy.name} violated",
    }


def _details(violation: Violation) -> str:
    value = "" if violation.value is None else f" (value {violation.value:g})"
    return f"{violation.policy.description or violation.policy.name}{value}"
