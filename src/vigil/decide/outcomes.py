"""Writing what the decision core decided: the actions to create, and the decision rows
(a suppression that repeats within its episode counts on the row it repeats)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.actions.approval import approval_fields, approval_waiting
from vigil.actions.status import Status
from vigil.actions.store import Action, create_action, create_actions, policy_key
from vigil.decide import core, episodes
from vigil.decide.core import Step
from vigil.decide.episodes import Episode, NewDecision, Pair
from vigil.decide.observations import Observation
from vigil.decide.reasons import outcome_of
from vigil.errors import ActionAlreadyOpen
from vigil.observability.audit import Actor
from vigil.policy.evaluator import Violation


class DecisionBook:
    """The decision rows to write: new ones (a repeat within this call counts on the row
    it repeats) and repeats of rows already stored."""

    def __init__(self) -> None:
        self.fresh: list[tuple[Episode, NewDecision]] = []
        self._last: dict[Pair, int] = {}
        self.repeats: list[int] = []

    def add(
        self,
        violation: Violation,
        episode: Episode,
        decision: core.Decision,
        action: Action | None,
    ) -> None:
        if decision.repeat:
            if episode.pair in self._last:
                self.fresh[self._last[episode.pair]][1].count += 1
                return
            if episode.decision_id is not None:
                self.repeats.append(episode.decision_id)
                return
        self._last[episode.pair] = len(self.fresh)
        self.fresh.append(
            (
                episode,
                NewDecision(
                    policy_name=violation.policy.name,
                    target=violation.target,
                    severity=violation.policy.severity,
                    episode=episode.phase.episode,
                    value=violation.value,
                    outcome=outcome_of(decision.reason),
                    reason=None if decision.reason is None else decision.reason.value,
                    action_id=None if action is None else action.id,
                ),
            )
        )

    async def write(self, conn: AsyncConnection, now: datetime) -> None:
        ids = await episodes.add_decisions(conn, items=[d for _, d in self.fresh], now=now)
        for (episode, _), decision_id in zip(self.fresh, ids, strict=True):
            episode.decision_id = decision_id  # the last one written wins: the newest
        await episodes.count_again(conn, ids=self.repeats, now=now)


async def create_actions_for(
    conn: AsyncConnection,
    observations: Sequence[Observation],
    steps: Sequence[Step | None],
    now: datetime,
    actor: Actor,
) -> dict[int, Action]:
    """Create the actions the core decided on; each created one by its observation's index."""
    acting = [
        (index, observation)
        for index, (observation, step) in enumerate(zip(observations, steps, strict=True))
        if isinstance(observation, Violation)
        and step is not None
        and step.decision is not None
        and step.decision.acts
    ]
    if not acting:
        return {}
    items = [_new_action(v, steps, i, now) for i, v in acting]
    try:
        records: list[Action | None] = list(
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
    for record in records:
        if record is not None and record.status == Status.AWAITING_APPROVAL.value:
            await approval_waiting(conn, record=record, now=now)
    return {
        index: record
        for (index, _), record in zip(acting, records, strict=True)
        if record is not None
    }


def _new_action(
    violation: Violation, steps: Sequence[Step | None], index: int, now: datetime
) -> dict[str, Any]:
    step = steps[index]
    assert step is not None
    policy = violation.policy
    item: dict[str, Any] = {
        "dedup_key": policy_key(policy.name),
        "policy_name": policy.name,
        "target": violation.target,
        "action": policy.action,
        "params": dict(policy.params),
        "severity": policy.severity,
        "trigger_value": violation.value,
        "details": _details(violation),
        "reason": f"policy {policy.name} violated",
        "episode": step.state.phase.episode,
        "tags": violation.tags,
    }
    if policy.approval_required:
        item |= approval_fields(policy, now)
        item["reason"] = f"policy {policy.name} violated; awaiting approval"
    return item


def _details(violation: Violation) -> str:
    value = "" if violation.value is None else f" (value {violation.value:g})"
    return f"{violation.policy.description or violation.policy.name}{value}"
