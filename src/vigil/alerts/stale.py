"""The runner's part for ``alert`` policies: alerts that stopped being refreshed go stale,
and firing pairs that no firing alert holds any more settle.

Alertmanager re-sends a firing alert every ``repeat_interval``; one not heard of for
``VIGIL_ALERT_STALE_SECONDS`` is taken as gone (Alertmanager down, the receiver removed, a
resolution lost), so an episode cannot fire for ever on an alert no one tells Vigil about.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from vigil.alerts import store
from vigil.alerts.matching import matches
from vigil.decide import episodes
from vigil.decide.observations import Observation, Settled
from vigil.decide.state import Phase
from vigil.observability.logging import get_logger
from vigil.policy.evaluator import PolicyIndex
from vigil.policy.models import AlertCondition, PolicySpec

log = get_logger(__name__)


async def settle_alerts(
    conn: AsyncConnection,
    *,
    index: PolicyIndex,
    now: datetime,
    stale_after: float,
    listening_since: datetime | None = None,
    gone_stale: dict[tuple[str, str], int] | None = None,
) -> list[Observation]:
    """Mark firing alerts not refreshed for ``stale_after`` seconds stale; the settlements
    of the ``alert`` policies' firing pairs that no firing alert holds any more. The pairs
    settled because their alert went stale are added to ``gone_stale`` (pair → episode):
    their actions cannot be verified. Before ``stale_after`` seconds have passed since
    ``listening_since`` (when the caller started listening) nothing goes stale: after Vigil
    itself was away, Alertmanager's next repeat must get the chance to be heard."""
    seen_before = now - timedelta(seconds=stale_after)
    listened = listening_since is None or listening_since <= seen_before
    stale = await store.mark_stale(conn, seen_before=seen_before) if listened else []
    for alert in stale:
        log.warning(
            "alert.stale",
            fingerprint=alert.fingerprint,
            alertname=alert.labels.get("alertname"),
            target=alert.target,
            last_seen_at=alert.last_seen_at.isoformat(),
            stale_seconds=stale_after,
        )
    policies = {p.name: p for p in index.alerts}
    if not policies:
        return []
    pairs = [
        e
        for e in await episodes.unsettled(conn)
        if e.policy_name in policies and e.phase.phase is Phase.FIRING
    ]
    if not pairs:
        return []
    live = await store.firing_labels(
        conn, alertnames=_alertnames(policies[e.policy_name] for e in pairs)
    )
    settled: list[Observation] = []
    for episode in pairs:
        policy = policies[episode.policy_name]
        if _holds(policy, episode.target, live):
            continue
        why = "stale" if _holds(policy, episode.target, [a.labels for a in stale]) else "gone"
        log.info(
            "alert.episode_settled",
            policy=policy.name,
            target=episode.target,
            why=why,
            note="no notification refreshed its alert within VIGIL_ALERT_STALE_SECONDS"
            if why == "stale"
            else "no firing alert matches the policy for this target",
            stale_seconds=stale_after,
        )
        settled.append(Settled(policy, episode.target, episode.phase.episode))
        if why == "stale" and gone_stale is not None:
            gone_stale[(policy.name, episode.target)] = episode.phase.episode
    return settled


def _alertnames(policies: Iterable[PolicySpec]) -> set[str]:
    return {p.condition.alertname for p in policies if isinstance(p.condition, AlertCondition)}


def _holds(policy: PolicySpec, target: str, alerts: Iterable[dict[str, str]]) -> bool:
    """Whether one of ``alerts`` (label sets) holds ``policy`` for ``target``."""
    return any(m.target == target for labels in alerts for m in matches([policy], labels))
