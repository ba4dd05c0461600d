"""Policy routes: CRUD, enable/disable, by severity, reload, dry-run evaluation, runner status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from vigil.api.deps import ActorDep, ContainerDep, VigilRoute
from vigil.decide.episodes import Episode
from vigil.http.errors import error_responses
from vigil.policy import store
from vigil.policy.models import PolicySpec, PolicyUpdate, Severity
from vigil.policy.service import Backtest, DryRun, check_action, validate_policy
from vigil.strict import StrictModel
from vigil.text import Name, SafeStr, TagValue, UtcTimestamp

router = APIRouter(prefix="/api/v1/policies", tags=["policies"], route_class=VigilRoute)

NameParam = Annotated[SafeStr, Path(max_length=255, description="The policy's name")]


class PolicyOut(PolicySpec):
    model_config = ConfigDict(extra="ignore")  # an answer, not an input

    source: str = Field(description="`api` or `file`: where the policy was created")
    created_at: datetime
    updated_at: datetime


def policy_out(stored: store.StoredPolicy) -> dict[str, Any]:
    """A stored policy as the API shows it: its document plus bookkeeping fields."""
    document = dict(stored.spec)
    document["enabled"] = stored.enabled
    document["source"] = stored.source
    document["created_at"] = stored.created_at
    document["updated_at"] = stored.updated_at
    return document


class PolicyList(BaseModel):
    ok: bool
    policies: dict[str, PolicyOut]
    total: int
    enabled_count: int


class OkMessage(BaseModel):
    ok: bool
    message: str


class EvaluateIn(StrictModel):
    model_config = ConfigDict(
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"metrics": {"cpu_usage": 95}, "target": "web-01"}]},
    )

    metrics: dict[Name, Annotated[float, Field(strict=True, allow_inf_nan=False)]] = Field(
        min_length=1, max_length=1000
    )
    target: Name
    tags: dict[Name, TagValue] = Field(
        default_factory=dict, max_length=64, description="The target's tags (expressions read them)"
    )


class EvaluatedViolation(BaseModel):
    policy_name: str
    severity: str
    description: str
    target: str
    action: str
    triggered_at: datetime


class WouldTrigger(BaseModel):
    action_id: int | None
    policy_name: str
    target: str
    action: str
    status: str


class EvaluateOut(BaseModel):
    ok: bool
    violations: list[EvaluatedViolation]
    actions_triggered: list[WouldTrigger]
    needs_history: dict[str, list[str]] = Field(
        description="Policies for this target with conditions judged over stored samples"
        " (`for`, `window`, `rate`, `absent`): where, in each"
    )
    timestamp: datetime


def evaluate_out(run: DryRun) -> dict[str, Any]:
    """A dry run as the API shows it."""
    return {
        "ok": True,
        "violations": [
            {
                "policy_name": v.policy.name,
                "severity": v.policy.severity,
                "description": v.policy.description,
                "target": run.target,
                "action": v.policy.action,
                "triggered_at": run.at,
            }
            for v in run.verdicts
        ],
        "actions_triggered": [
            {
                "action_id": None,
                "policy_name": v.policy.name,
                "target": run.target,
                "action": v.policy.action,
                "status": "would_trigger"
                if v.suppressed is None
                else f"suppressed: {v.suppressed.value}",
            }
            for v in run.verdicts
        ],
        "needs_history": run.needs_history,
        "timestamp": run.at,
    }


class BacktestIn(StrictModel):
    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [{"from": "2026-01-19T11:00:00Z", "to": "2026-01-19T12:00:00Z"}]
        },
    )

    from_: UtcTimestamp = Field(alias="from", description="Start of the range replayed")
    to: UtcTimestamp = Field(description="End of the range replayed")


class BacktestPolicyIn(BacktestIn):
    policy: dict[str, Any] = Field(description="A full policy body, as for POST /policies")


class BacktestDecision(BaseModel):
    at: datetime
    target: str
    episode: int
    value: float | None
    outcome: str
    reason: str | None
    action: str | None
    count: int


class BacktestTarget(BaseModel):
    acted: int
    suppressed: int
    first: datetime
    last: datetime


class BacktestSummary(BaseModel):
    acted: int
    suppressed: dict[str, int]
    targets: dict[str, BacktestTarget]


class BacktestOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    ok: bool
    policy: str
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    samples: int
    decisions: list[BacktestDecision]
    summary: BacktestSummary


def backtest_out(backtest: Backtest) -> dict[str, Any]:
    """A backtest as the API shows it."""
    return {
        "ok": True,
        "policy": backtest.policy,
        "from": backtest.start,
        "to": backtest.end,
        **backtest.replay,
    }


class BreakerOut(BaseModel):
    open: bool
    actions_last_hour: int
    max_actions_per_hour: int | None
    opened_at: datetime | None
    reset_at: datetime | None
    open_targets: int
    max_concurrent_targets: int | None


class TargetState(BaseModel):
    target: str
    state: str
    episode: int
    since: datetime | None
    pending_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    action_id: int | None
    acted: bool
    suppressed: str | None
    escalated_at: datetime | None


def target_state_out(e: Episode) -> dict[str, Any]:
    """One (policy, target)'s state as the API shows it."""
    p = e.phase
    return {
        "target": e.target,
        "state": p.phase.value,
        "episode": p.episode,
        "since": p.since,
        "pending_since": p.pending_since,
        "fired_at": p.fired_at,
        "resolved_at": p.resolved_at,
        "action_id": e.action_id,
        "acted": e.acted,
        "suppressed": e.reason,
        "escalated_at": e.escalated_at,
    }


class PolicyStateOut(BaseModel):
    ok: bool
    policy: str
    breaker: BreakerOut
    targets: list[TargetState]


class ResetOut(BaseModel):
    ok: bool
    message: str
    breaker: BreakerOut


class RunnerStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    enabled: bool
    running: bool
    interval_seconds: float
    last_run_at: datetime | None
    last_duration_ms: float | None
    leader: bool = Field(description="Whether this process's runner holds the lease")
    leader_name: str | None = Field(description="The process that holds the runner lease")


class RunnerStatusOut(BaseModel):
    ok: bool
    runner: RunnerStatus


async def _listing(container: ContainerDep, severity: str | None) -> dict[str, Any]:
    async with container.database.read() as conn:
        stored = await store.list_policies(conn, severity=severity)
    out = {p.name: policy_out(p) for p in stored}
    return {
        "ok": True,
        "policies": out,
        "total": len(out),
        "enabled_count": sum(1 for p in out.values() if p["enabled"]),
    }


@router.get("", response_model=PolicyList, responses=error_responses(503))
async def list_policies(container: ContainerDep) -> dict[str, Any]:
    """Every stored policy, by name."""
    return await _listing(container, None)


@router.post(
    "", status_code=201, response_model=PolicyOut, responses=error_responses(409, 413, 422, 503)
)
async def create_policy(
    spec: PolicySpec, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """Create a policy; 409 if the name is taken, 422 naming the field if it is invalid."""
    return policy_out(await container.policies.create(spec, actor=actor))


@router.get("/runner/status", response_model=RunnerStatusOut, responses=error_responses(503))
async def runner_status(container: ContainerDep) -> dict[str, Any]:
    """The background runner: whether it runs, when it last ran and how long it took."""
    return {"ok": True, "runner": await container.runner.describe()}


@router.get("/severity/{severity}", response_model=PolicyList, responses=error_responses(422, 503))
async def by_severity(severity: Severity, container: ContainerDep) -> dict[str, Any]:
    """Policies of one severity (`info`, `warning`, `critical`)."""
    return await _listing(container, severity)


@router.post("/reload", response_model=OkMessage, responses=error_responses(422, 503))
async def reload_policies(container: ContainerDep, actor: ActorDep) -> dict[str, Any]:
    """Re-read the policy file into the store (upsert by name; nothing is deleted)."""
    source, report = await container.policies.reload(actor=actor)
    return {
        "ok": True,
        "message": f"Reloaded {report.total} policies from {source} "
        f"({report.created} created, {report.updated} updated, {report.unchanged} unchanged)",
    }


@router.post("/evaluate", response_model=EvaluateOut, responses=error_responses(413, 422, 503))
async def evaluate(body: EvaluateIn, container: ContainerDep) -> dict[str, Any]:
    """Dry run: which policies these values would violate and what would happen. Stores nothing.

    The values are taken as sustained; `needs_history` names the conditions that the
    runner judges over stored samples instead."""
    return evaluate_out(await container.policies.evaluate(body.metrics, body.target, body.tags))


@router.post("/backtest", response_model=BacktestOut, responses=error_responses(413, 422, 503))
async def backtest_unsaved(body: BacktestPolicyIn, container: ContainerDep) -> dict[str, Any]:
    """Replay stored samples through a policy that is not saved: the decisions it would
    have made. Changes nothing."""
    spec = validate_policy(body.policy, loc_prefix=("body", "policy"))
    check_action(spec, container.remediations.knows, loc_prefix=("body", "policy"))
    replayed = await container.policies.backtest(
        spec, body.from_, body.to, loc_prefix=("body", "policy")
    )
    return backtest_out(replayed)


@router.get("/{name}", response_model=PolicyOut, responses=error_responses(404, 503))
async def get_policy(name: NameParam, container: ContainerDep) -> dict[str, Any]:
    async with container.database.read() as conn:
        return policy_out(await store.get_policy(conn, name=name))


@router.put("/{name}", response_model=PolicyOut, responses=error_responses(404, 409, 413, 422, 503))
async def update_policy(
    name: NameParam, changes: PolicyUpdate, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    """Partial update of any field but `name`; the result must be a valid policy."""
    updated = await container.policies.update(
        name, changes.model_dump(mode="json", exclude_unset=True), actor=actor
    )
    return policy_out(updated)


@router.delete("/{name}", response_model=OkMessage, responses=error_responses(404, 503))
async def delete_policy(
    name: NameParam, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    await container.policies.delete(name, actor=actor)
    return {"ok": True, "message": f"Policy '{name}' deleted"}


@router.put("/{name}/enable", response_model=OkMessage, responses=error_responses(404, 503))
async def enable_policy(
    name: NameParam, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    await container.policies.set_enabled(name, True, actor=actor)
    return {"ok": True, "message": f"Policy '{name}' enabled"}


@router.put("/{name}/disable", response_model=OkMessage, responses=error_responses(404, 503))
async def disable_policy(
    name: NameParam, container: ContainerDep, actor: ActorDep
) -> dict[str, Any]:
    await container.policies.set_enabled(name, False, actor=actor)
    return {"ok": True, "message": f"Policy '{name}' disabled"}


@router.get("/{name}/state", response_model=PolicyStateOut, responses=error_responses(404, 503))
async def policy_state(name: NameParam, container: ContainerDep) -> dict[str, Any]:
    """The policy's circuit breaker and blast radius, and each target's state (`ok`,
    `pending`, `firing`, `resolved`) with its current episode."""
    state = await container.policies.state(name)
    return {
        "ok": True,
        "policy": state.policy,
        "breaker": state.breaker,
        "targets": [target_state_out(e) for e in state.targets],
    }


@router.post("/{name}/reset", response_model=ResetOut, responses=error_responses(404, 503))
async def reset_policy(name: NameParam, container: ContainerDep, actor: ActorDep) -> dict[str, Any]:
    """Close the policy's circuit breaker: only actions created from now on count."""
    breaker = await container.policies.reset(name, actor=actor)
    return {"ok": True, "message": f"Policy '{name}' breaker reset", "breaker": breaker}


@router.post(
    "/{name}/backtest",
    response_model=BacktestOut,
    responses=error_responses(404, 413, 422, 503),
)
async def backtest_policy(
    name: NameParam, body: BacktestIn, container: ContainerDep
) -> dict[str, Any]:
    """Replay the stored samples of `from`..`to` through the policy and its guards with a
    simulated clock: the decisions it would have made (counts per target, first and last,
    suppressed and why). Changes nothing."""
    spec = await container.policies.stored(name)
    return backtest_out(await container.policies.backtest(spec, body.from_, body.to))
