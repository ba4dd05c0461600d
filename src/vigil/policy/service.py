"""Policy use cases: each runs in one transaction and records an audit row."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select

from vigil.actions.store import PairActions, pair_states, policy_key
from vigil.clock import Clock
from vigil.db.engine import Database
from vigil.db.migrate import startup_lock
from vigil.db.tables import metrics as stored_samples
from vigil.decide import episodes
from vigil.decide.breaker import breaker_state, reset_breaker
from vigil.decide.core import Guards, Limits, guard
from vigil.decide.pause import get_state
from vigil.decide.reasons import Suppressed
from vigil.decide.silence_rules import silencing
from vigil.decide.silences import active_rules, rules_between
from vigil.errors import Conflict, InvalidInput, PolicyInvalid, Unavailable
from vigil.observability.audit import Actor, append_audit
from vigil.observability.logging import get_logger
from vigil.observability.metrics import VigilMetrics
from vigil.policy import store
from vigil.policy.backtest import backtest as replay
from vigil.policy.backtest import backtest_promql, needs_runner
from vigil.policy.conditions import history_parts, metrics_of, source_of
from vigil.policy.evaluator import PolicyIndex
from vigil.policy.loader import read_policy_file
from vigil.policy.matcher import target_matches
from vigil.policy.models import PolicySpec, PromQLCondition
from vigil.policy.prometheus import PrometheusClient, PrometheusUnavailable, QueryInvalid
from vigil.policy.promql import Found, targets_of

MAX_BACKTEST_SAMPLES = 500_000
"""The most samples one backtest replays (a wider range is refused with 422)."""
MAX_BACKTEST_PASSES = 100_000
"""The most simulated runner passes one backtest makes (11.5 days at the default 10 s)."""
MAX_RANGE_POINTS = 11_000
"""The most points per series a ``promql`` backtest's range query asks for (Prometheus's
own limit): a longer span is replayed with a coarser step."""

log = get_logger(__name__)


def _ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with its timestamps as ISO 8601 text (for an audit row)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class PolicyState:
    """A policy's circuit breaker and blast radius, and the state of each of its targets."""

    policy: str
    breaker: dict[str, Any]
    targets: list[episodes.Episode]


@dataclass(frozen=True, slots=True)
class Backtest:
    """What a policy would have decided over stored samples from ``start`` to ``end``."""

    policy: str
    start: datetime
    end: datetime
    replay: dict[str, Any]
    """The replay: ``samples``, ``decisions`` and ``summary``."""


@dataclass(frozen=True, slots=True)
class DryRunVerdict:
    """A policy the values violate, and what the guards would do (``suppressed``: why they
    would hold it back; ``None``: it would act)."""

    policy: PolicySpec
    suppressed: Suppressed | None


@dataclass(frozen=True, slots=True)
class DryRun:
    """A dry run's verdicts for one target at ``at``, and the policies for that target whose
    conditions need stored samples (where, in each)."""

    target: str
    at: datetime
    verdicts: list[DryRunVerdict]
    needs_history: dict[str, list[str]]


def validate_policy(
    document: Mapping[str, Any], *, loc_prefix: tuple[str, ...] = ("body",)
) -> PolicySpec:
    """A policy from a JSON document; :class:`PolicyInvalid` naming each bad field."""
    try:
        return PolicySpec.model_validate(document)
    except ValidationError as exc:
        raise PolicyInvalid(
            "invalid policy",
            detail=[
                {"loc": [*loc_prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False, include_context=False)
            ],
        ) from exc


def check_action(
    spec: PolicySpec, knows: Callable[[str], bool], *, loc_prefix: tuple[str, ...] = ("body",)
) -> None:
    """:class:`PolicyInvalid` unless a remediation handles the policy's action and each of
    its escalation actions."""
    named: list[tuple[tuple[str | int, ...], str]] = [(("action",), spec.action)]
    named += [(("escalate", i), action) for i, action in enumerate(spec.escalate)]
    unknown = [(loc, action) for loc, action in named if not knows(action)]
    if unknown:
        raise PolicyInvalid(
            f"no remediation handles action {unknown[0][1]!r}",
            detail=[
                {
                    "loc": [*loc_prefix, *loc],
                    "msg": f"no remediation handles action {action!r}; add one to the "
                    "remediations file (VIGIL_REMEDIATIONS_FILE) or use a known action",
                    "type": "value_error",
                }
                for loc, action in unknown
            ],
        )


def queries_of(spec: PolicySpec) -> dict[str, str]:
    """The PromQL queries of a policy, by where they are (``condition``, ``clear``)."""
    return {
        where: condition.query
        for where, condition in (("condition", spec.condition), ("clear", spec.clear))
        if isinstance(condition, PromQLCondition)
    }


async def check_queries(
    spec: PolicySpec,
    client: PrometheusClient | None,
    now: datetime,
    *,
    loc_prefix: tuple[str, ...] = ("body",),
    skip: frozenset[str] = frozenset(),
) -> None:
    """Have Prometheus parse each PromQL query of ``spec`` (a dry instant query) but those
    in ``skip``: :class:`PolicyInvalid` naming the query with Prometheus's error (or saying
    that VIGIL_PROMETHEUS_URL is not set), :class:`Unavailable` when Prometheus does not
    answer."""
    for where, query in queries_of(spec).items():
        if query in skip:
            continue
        loc = [*loc_prefix, where, "query"]
        if client is None:
            message = (
                "VIGIL_PROMETHEUS_URL is not set: a promql condition is asked of a"
                " Prometheus-compatible query API, which checks its query when the policy is"
                " stored; set it and try again"
            )
            raise PolicyInvalid(
                f"{where}.query: {message}",
                detail=[{"loc": loc, "msg": message, "type": "value_error"}],
            )
        try:
            await client.query(query, now)
        except QueryInvalid as exc:
            raise PolicyInvalid(
                f"{where}.query: {exc.message}",
                detail=[{"loc": loc, "msg": exc.message, "type": "value_error"}],
            ) from exc
        except PrometheusUnavailable as exc:
            raise Unavailable(
                f"Prometheus did not answer, so the query could not be checked: {exc.message}"
            ) from exc


class PolicyService:
    """Creates, changes and reloads policies; evaluates them in dry runs."""

    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        metrics: VigilMetrics,
        policies_file: Path | None,
        knows_action: Callable[[str], bool] = lambda _action: True,
        runner_interval: float = 10.0,
        prometheus: PrometheusClient | None = None,
    ) -> None:
        self.runner_interval = runner_interval
        self.prometheus = prometheus
        self._db = database
        self._clock = clock
        self._metrics = metrics
        self.policies_file = policies_file
        self._knows = knows_action

    async def create(self, spec: PolicySpec, *, actor: Actor) -> store.StoredPolicy:
        """Store a new policy; :class:`PolicyInvalid` if no remediation handles its action,
        :class:`DuplicatePolicy` if its name is taken."""
        check_action(spec, self._knows)
        await check_queries(spec, self.prometheus, self._clock.now())
        async with self._db.write() as conn:
            stored = await store.create_policy(conn, spec=spec, now=self._clock.now(), actor=actor)
        self._metrics.policy_loaded(spec.name, spec.severity)
        return stored

    async def update(
        self, name: str, changes: Mapping[str, Any], *, actor: Actor
    ) -> store.StoredPolicy:
        """Apply a partial update; the merged document must validate as a whole."""
        if "name" in changes and changes["name"] is not None and changes["name"] != name:
            raise PolicyInvalid(
                "a policy cannot be renamed",
                detail=[
                    {
                        "loc": ["body", "name"],
                        "msg": "a policy's name cannot be changed",
                        "type": "value_error",
                    }
                ],
            )
        # A new query is checked by Prometheus first, outside the transaction.
        async with self._db.read() as conn:
            before = await store.get_policy(conn, name=name)
        spec = validate_policy({**before.spec, "enabled": before.enabled, **changes, "name": name})
        check_action(spec, self._knows)
        kept = frozenset(queries_of(before.policy()).values())
        await check_queries(spec, self.prometheus, self._clock.now(), skip=kept)
        checked = kept | frozenset(queries_of(spec).values())
        async with self._db.write() as conn:
            current = await store.get_policy(conn, name=name, for_update=True)
            merged = {**current.spec, "enabled": current.enabled, **changes, "name": name}
            spec = validate_policy(merged)
            check_action(spec, self._knows)
            if not checked.issuperset(queries_of(spec).values()):
                raise Conflict("the policy changed while its query was checked: send it again")
            updated = await store.replace_policy(
                conn, name=name, spec=spec, now=self._clock.now(), actor=actor
            )
        self._metrics.policy_loaded(spec.name, spec.severity)
        return updated

    async def set_enabled(self, name: str, enabled: bool, *, actor: Actor) -> None:
        async with self._db.write() as conn:
            current = await store.get_policy(conn, name=name, for_update=True)
            spec = current.policy().model_copy(update={"enabled": enabled})
            await store.replace_policy(
                conn,
                name=name,
                spec=spec,
                now=self._clock.now(),
                actor=actor,
                kind="policy.enabled" if enabled else "policy.disabled",
            )

    async def delete(self, name: str, *, actor: Actor) -> None:
        async with self._db.write() as conn:
            await store.delete_policy(conn, name=name, now=self._clock.now(), actor=actor)
            await episodes.forget_policy(conn, policy_name=name)

    async def backtest(
        self,
        spec: PolicySpec,
        start: datetime,
        end: datetime,
        *,
        loc_prefix: tuple[str, ...] = ("policy",),
    ) -> Backtest:
        """Replay the stored samples from ``start`` to ``end`` through ``spec`` with a
        simulated clock: the decisions it would have made. Reads only."""
        if source_of(spec.condition) == "alerts":
            message = (
                "alert policies are not backtested: their alerts come from Alertmanager,"
                " not from samples Vigil can replay"
            )
            raise InvalidInput(
                message, detail=[{"loc": ["body"], "msg": message, "type": "value_error"}]
            )
        end = min(end, self._clock.now())  # nothing is stored after now
        if end <= start:
            message = "must be later than 'from' (and 'from' earlier than now)"
            raise InvalidInput(
                message, detail=[{"loc": ["body", "to"], "msg": message, "type": "value_error"}]
            )
        if isinstance(spec.condition, PromQLCondition):
            return await self._backtest_promql(spec, start, end, loc_prefix)
        passes = (end - start).total_seconds() / self.runner_interval
        if needs_runner(spec) and passes > MAX_BACKTEST_PASSES:
            message = (
                f"the range spans {passes:,.0f} runner passes of {self.runner_interval:g}s;"
                f" a backtest replays at most {MAX_BACKTEST_PASSES:,}: narrow it"
            )
            raise InvalidInput(
                message, detail=[{"loc": ["body", "from"], "msg": message, "type": "value_error"}]
            )
        names = set(metrics_of(spec.condition))
        if spec.clear is not None:
            names |= metrics_of(spec.clear)
        in_range = (
            stored_samples.c.name.in_(sorted(names)),
            stored_samples.c.ts >= start,
            stored_samples.c.ts <= end,
            stored_samples.c.target.is_not(None),
        )
        async with self._db.read() as conn:
            count = (
                await conn.execute(
                    select(func.count()).select_from(stored_samples).where(*in_range)
                )
            ).scalar_one()
            if count > MAX_BACKTEST_SAMPLES:
                message = (
                    f"the range holds {count:,} samples of the policy's metrics; a backtest"
                    f" replays at most {MAX_BACKTEST_SAMPLES:,}: narrow it"
                )
                raise InvalidInput(
                    message,
                    detail=[{"loc": ["body", "from"], "msg": message, "type": "value_error"}],
                )
            rows = await conn.execute(
                select(
                    stored_samples.c.ts,
                    stored_samples.c.target,
                    stored_samples.c.name,
                    stored_samples.c.value,
                    stored_samples.c.tags,
                )
                .where(*in_range)
                .order_by(stored_samples.c.ts, stored_samples.c.id)
            )
            samples = [(r.ts, r.target, r.name, r.value, r.tags or {}) for r in rows]
            rules = await rules_between(conn, start=start, end=end)

        def silenced(policy: str, target: str, tags: Mapping[str, str], at: datetime) -> bool:
            return silencing(rules, policy=policy, target=target, tags=tags, now=at) is not None

        # In a thread: a long replay must not hold up this process's event loop (ingest,
        # the runner's lease, the notifier).
        result = await asyncio.to_thread(
            replay,
            spec,
            samples,
            start=start,
            end=end,
            interval=self.runner_interval,
            silenced=silenced,
        )
        return Backtest(policy=spec.name, start=start, end=end, replay=result)

    async def _backtest_promql(
        self, spec: PolicySpec, start: datetime, end: datetime, loc_prefix: tuple[str, ...]
    ) -> Backtest:
        """Replay a ``promql`` policy over range queries of its queries, one simulated pass
        per step (the runner's interval, or coarser to stay within
        :data:`MAX_RANGE_POINTS`)."""
        await check_queries(spec, self.prometheus, end, loc_prefix=loc_prefix)
        assert self.prometheus is not None  # checked just above
        span = (end - start).total_seconds()
        step = max(self.runner_interval, span / MAX_RANGE_POINTS, 0.001)
        step_ms = round(step * 1000)
        first = start + timedelta(milliseconds=step_ms)
        ticks = [
            first + timedelta(milliseconds=step_ms * i) for i in range(int(span * 1000 // step_ms))
        ]
        answers: dict[str, dict[int, list[tuple[dict[str, str], float | None]]]] = {}
        points = 0
        for where, query in queries_of(spec).items():
            by_tick: dict[int, list[tuple[dict[str, str], float | None]]] = {}
            if ticks:
                try:
                    matrix = await self.prometheus.query_range(
                        query, ticks[0], ticks[-1], step_ms / 1000
                    )
                except QueryInvalid as exc:
                    loc = [*loc_prefix, where, "query"]
                    raise InvalidInput(
                        exc.message,
                        detail=[{"loc": loc, "msg": exc.message, "type": "value_error"}],
                    ) from exc
                origin = _ms(ticks[0])
                for labels, samples in matrix:
                    for ts, value in samples:
                        # Some TSDBs (VictoriaMetrics, Mimir, Thanos's query frontend) move
                        # the range's start back to a multiple of the step: each sample
                        # belongs to the first tick at or after it.
                        tick = -(-(_ms(ts) - origin) // step_ms)
                        by_tick.setdefault(tick, []).append((labels, value))
                        points += 1
            answers[where] = by_tick

        def found(where: str, tick: int) -> Found | None:
            if where not in answers:
                return None
            return targets_of(spec, answers[where].get(tick, []))

        passes = [
            (t, found("condition", i) or Found(), found("clear", i)) for i, t in enumerate(ticks)
        ]
        rules = await self._rules_between(start, end)

        def silenced(policy: str, target: str, tags: Mapping[str, str], at: datetime) -> bool:
            return silencing(rules, policy=policy, target=target, tags=tags, now=at) is not None

        result = await asyncio.to_thread(
            backtest_promql, spec, passes, points=points, silenced=silenced
        )
        return Backtest(policy=spec.name, start=start, end=end, replay=result)

    async def _rules_between(self, start: datetime, end: datetime) -> Any:
        async with self._db.read() as conn:
            return await rules_between(conn, start=start, end=end)

    async def stored(self, name: str) -> PolicySpec:
        """A stored policy; :class:`NotFound` if there is none of that name."""
        async with self._db.read() as conn:
            return (await store.get_policy(conn, name=name)).policy()

    async def state(self, name: str) -> PolicyState:
        """The policy's breaker and the state of each of its targets."""
        now = self._clock.now()
        async with self._db.read() as conn:
            spec = (await store.get_policy(conn, name=name)).policy()
            breaker = await breaker_state(conn, policy=spec, now=now)
            pairs = await episodes.of_policy(conn, policy_name=name)
        return PolicyState(policy=name, breaker=breaker, targets=pairs)

    async def reset(self, name: str, *, actor: Actor) -> dict[str, Any]:
        """Close the policy's circuit breaker (audited); the breaker after."""
        now = self._clock.now()
        async with self._db.write() as conn:
            spec = (await store.get_policy(conn, name=name, for_update=True)).policy()
            before = await breaker_state(conn, policy=spec, now=now)
            await reset_breaker(conn, policy_name=name, now=now)
            after = await breaker_state(conn, policy=spec, now=now)
            await append_audit(
                conn,
                at=now,
                actor=actor,
                kind="policy.breaker_reset",
                subject=f"policy:{name}",
                before=jsonable(before),
                after=jsonable(after),
            )
        return after

    async def reload(
        self, *, actor: Actor, unchecked_ok: bool = False
    ) -> tuple[str, store.LoadReport]:
        """Upsert the policy file into the store; nothing changes if the file is invalid.

        Under the start-up lock, so replicas loading the file at once take turns instead of
        racing to create the same policy. Prometheus checks each PromQL query; with
        ``unchecked_ok`` (at start-up) a Prometheus that does not answer is logged and the
        file loaded, so that Vigil starts while it is away.
        """
        source, specs = read_policy_file(self.policies_file)
        for spec in specs:
            where = (source, "policies", spec.name)
            check_action(spec, self._knows, loc_prefix=where)
            try:
                await check_queries(spec, self.prometheus, self._clock.now(), loc_prefix=where)
            except PolicyInvalid as exc:
                raise PolicyInvalid(
                    f"{source}: policies.{spec.name}.{exc.message}", detail=exc.detail
                ) from exc
            except Unavailable as exc:
                if not unchecked_ok:
                    raise
                log.warning("policies.query_unchecked", policy=spec.name, error=exc.message)
        async with startup_lock(self._db), self._db.write() as conn:
            report = await store.upsert_from_file(
                conn, specs=specs, now=self._clock.now(), actor=actor
            )
        for spec in specs:
            self._metrics.policy_loaded(spec.name, spec.severity)
        return source, report

    async def register_metrics(self) -> None:
        """Create every stored policy's violation series (at zero)."""
        async with self._db.read() as conn:
            for stored in await store.list_policies(conn):
                self._metrics.policy_loaded(stored.name, stored.severity)

    async def evaluate(
        self, values: Mapping[str, float], target: str, tags: Mapping[str, str] | None = None
    ) -> DryRun:
        """A dry run: which policies the given values violate and what the guards would do
        were it a new firing episode.

        Reads only; nothing is stored. The values given are all the evaluation sees, taken
        as sustained: conditions that need history (``for``, ``window``, ``rate``,
        ``absent``) are judged as if the values had held all along, and are named in
        ``needs_history``.
        """
        now = self._clock.now()
        tags = tags or {}
        async with self._db.read() as conn:
            specs = [stored.policy() for stored in await store.list_policies(conn)]
            index = PolicyIndex(specs)
            found = index.evaluate_values(target, values, tags)
            states = await pair_states(
                conn, pairs=[(policy_key(v.policy.name), target) for v in found]
            )
            paused = (await get_state(conn)).paused
            rules = await active_rules(conn, now=now)
            breakers = {
                v.policy.name: await breaker_state(conn, policy=v.policy, now=now)
                for v in found
                if v.policy.max_actions_per_hour is not None
                or v.policy.max_concurrent_targets is not None
            }
        needs_history = {
            p.name: history_parts(p.condition)
            for p in (*index.historic, *index.alerts)
            if target_matches(p.target, target)
        }
        verdicts = []
        for v in found:
            p = v.policy
            state = states.get((policy_key(p.name), target), PairActions())
            breaker = breakers.get(p.name)
            reason = guard(
                Guards(
                    enabled=p.enabled,
                    auto_remediate=p.auto_remediate,
                    shadow=p.shadow,
                    cooldown_seconds=p.cooldown_seconds,
                    open_action=state.open_action_id is not None,
                    last_ended_at=state.last_ended_at,
                    silenced=silencing(rules, policy=p.name, target=target, tags=tags, now=now)
                    is not None,
                    paused=paused,
                    limits=Limits()
                    if breaker is None
                    else Limits(
                        max_actions_per_hour=p.max_actions_per_hour,
                        actions_last_hour=breaker["actions_last_hour"],
                        max_concurrent_targets=p.max_concurrent_targets,
                        open_targets=breaker["open_targets"],
                    ),
                ),
                now,
            )
            verdicts.append(DryRunVerdict(policy=p, suppressed=reason))
        return DryRun(target=target, at=now, verdicts=verdicts, needs_history=needs_history)
