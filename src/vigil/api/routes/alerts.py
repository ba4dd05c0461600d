"""Alerts: Alertmanager's webhook in (``POST /api/v1/alerts/alertmanager``), the stored
alerts out (``GET /api/v1/alerts``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from vigil.alerts.receiver import AlertResult
from vigil.alerts.schemas import WebhookIn
from vigil.alerts.store import StoredAlert, list_alerts
from vigil.api.deps import (
    ContainerDep,
    Limit,
    Page,
    actor_of,
    container_of,
    json_response,
    page_out,
)
from vigil.db.records import fields_of
from vigil.errors import PayloadTooLarge
from vigil.http.errors import clean_errors, error_responses

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

NO_TARGET = (
    "no usable target label (target, host, instance, pod, service, job): "
    "stored, and no policy was evaluated"
)
ENDED = "this alert had ended (resolved, or stale): a late notification of it changes nothing"


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    STALE = "stale"


class DecisionOut(BaseModel):
    policy_name: str
    severity: str
    action: str
    target: str
    suppressed: str | None = None
    action_id: int | None = None


class AlertResultOut(BaseModel):
    fingerprint: str
    target: str | None
    status: str
    new: bool
    decisions: list[DecisionOut]
    resolved: list[str]
    note: str | None = None


class WebhookOut(BaseModel):
    alerts: list[AlertResultOut]


def result_out(result: AlertResult) -> dict[str, Any]:
    """What one alert did, as the webhook's answer shows it."""
    decisions = []
    for d in result.decisions:
        policy = d.violation.policy
        item: dict[str, Any] = {
            "policy_name": policy.name,
            "severity": policy.severity,
            "action": policy.action,
            "target": d.violation.target,
        }
        if d.suppressed is not None:
            item["suppressed"] = d.suppressed.value
        if d.action is not None:
            item["action_id"] = d.action.id
        decisions.append(item)
    out: dict[str, Any] = {
        "fingerprint": result.alert.fingerprint,
        "target": result.target,
        "status": result.alert.status,
        "new": result.new,
        "decisions": decisions,
        "resolved": result.resolved,
    }
    if result.target is None and not decisions and not result.resolved:
        out["note"] = NO_TARGET
    elif result.ended and result.alert.status == "firing":
        out["note"] = ENDED
    return out


def _parse(body: bytes, max_alerts: int) -> WebhookIn:
    try:
        payload = WebhookIn.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in clean_errors(errors)]
        ) from exc
    if len(payload.alerts) > max_alerts:
        raise PayloadTooLarge(
            f"a notification of {len(payload.alerts)} alerts is above the limit of {max_alerts}"
        )
    return payload


@router.post(
    "/alertmanager",
    response_model=WebhookOut,
    responses=error_responses(413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookIn"}}},
        }
    },
)
async def alertmanager(request: Request) -> Response:
    """Alertmanager's webhook (``webhook_config``): store each alert and act on the ``alert``
    policies it matches; a notification re-sent decides nothing twice."""
    container = container_of(request)
    try:
        payload = _parse(await request.body(), container.settings.max_batch_size)
    except RequestValidationError:
        container.metrics.ingest_rejected_total.labels(reason="invalid").inc()
        raise
    except PayloadTooLarge:
        container.metrics.ingest_rejected_total.labels(reason="too_large").inc()
        raise
    results = await container.alerts.receive(payload.alerts, actor=actor_of(request))
    return json_response({"alerts": [result_out(r) for r in results]})


class StoredAlertOut(BaseModel):
    id: int
    fingerprint: str
    starts_at: datetime
    status: str
    ends_at: datetime | None
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str | None
    target: str | None
    received_at: datetime
    last_seen_at: datetime


class AlertList(BaseModel):
    count: int
    total: int
    page: int
    page_size: int
    alerts: list[StoredAlertOut]


def alert_out(alert: StoredAlert) -> dict[str, Any]:
    """A stored alert as the API shows it: every field of the record."""
    return fields_of(alert)


@router.get("", response_model=AlertList, responses=error_responses(422, 503))
async def alerts_list(
    container: ContainerDep, page: Page = 1, limit: Limit = 50, status: AlertStatus | None = None
) -> dict[str, Any]:
    """Alerts heard from Alertmanager, newest first: one per alert episode (fingerprint and
    `startsAt`). `status`: `firing`, `resolved`, or `stale` (firing, but not refreshed
    within VIGIL_ALERT_STALE_SECONDS)."""
    async with container.database.read() as conn:
        rows, total = await list_alerts(
            conn, status=status.value if status else None, page=page, limit=limit
        )
    return page_out("alerts", [alert_out(a) for a in rows], total=total, page=page, limit=limit)
