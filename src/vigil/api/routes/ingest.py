"""Ingest routes. Bodies are parsed here, not by FastAPI: first by the fast path
(:mod:`vigil.ingest.fast`, msgspec), which only ever accepts; whatever it is unsure of goes
the slow path (orjson + pydantic), which gives the 422s. Either way the batch limit is checked
before thousands of metrics are validated, and NaN/Infinity never get in.

A request may carry an ``Idempotency-Key`` header (docs/api.md, "Retries and idempotency
keys"): a valid body is then stored with its key, and a retry with the key is answered with
the first answer, byte for byte, storing nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from vigil.api.deps import actor_of, container_of, json_response
from vigil.container import Container
from vigil.errors import InvalidInput, PayloadTooLarge
from vigil.http.errors import clean_errors, error_responses
from vigil.ingest import fast
from vigil.ingest.pipeline import IdempotencyKey, IngestResult
from vigil.ingest.schemas import (
    BatchOut,
    IngestOut,
    MetricIn,
    Sample,
    limit_errors,
    to_sample,
)

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])

_METRICS = TypeAdapter(list[MetricIn])
_ERRORS: dict[int | str, dict[str, Any]] = error_responses(413, 422, 503)


IDEMPOTENCY_KEY = "Idempotency-Key"
_KEY = re.compile(r"^[!-~]{1,255}$")
"""A key: 1 to 255 visible ASCII characters (a UUID is a good one)."""


def _body_schema(name: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        },
        "parameters": [
            {
                "name": IDEMPOTENCY_KEY,
                "in": "header",
                "required": False,
                "description": "Makes a retry safe: a request with a key stored within "
                "VIGIL_IDEMPOTENCY_TTL_SECONDS gets the first answer and stores nothing; "
                "the same key with another body or route is refused (422).",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": _KEY.pattern,
                },
            }
        ],
    }


def _idempotency_key(
    request: Request, body: bytes, answer: Callable[[IngestResult], dict[str, Any]]
) -> IdempotencyKey | None:
    """The request's ``Idempotency-Key``, if it sent one; a 422 for a malformed one."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not _KEY.match(key):
        raise RequestValidationError(
            [
                {
                    "loc": ["header", IDEMPOTENCY_KEY],
                    "msg": "an idempotency key is 1 to 255 visible ASCII characters",
                    "type": "string_pattern_mismatch",
                }
            ]
        )
    # The route and the body, byte for byte: the same key for anything else is refused.
    fingerprint = hashlib.sha256(request.url.path.encode() + b"\n" + body).hexdigest()
    return IdempotencyKey(key, fingerprint, lambda result: orjson.dumps(answer(result)))


def _answered(result: IngestResult, answer: Callable[[IngestResult], dict[str, Any]]) -> Response:
    """The answer for ``result``: as stored with its idempotency key, when it has one."""
    if result.answer is not None:
        return Response(
            result.answer, status_code=result.status_code, media_type="application/json"
        )
    return json_response(answer(result), status_code=result.status_code)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"JSON decode error: {exc.msg}", "type": "json_invalid"}]
        ) from exc


def _invalid(exc: ValidationError, prefix: tuple[Any, ...]) -> RequestValidationError:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return RequestValidationError(
        [{**e, "loc": (*prefix, *e["loc"])} for e in clean_errors(errors)]
    )


def _slow_one(body: bytes, container: Container, now: datetime) -> Sample:
    """The slow path of a single metric: orjson and pydantic, with the documented 422s."""
    data = _json(body)
    try:
        metric = MetricIn.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, ("body",)) from exc
    problems = limit_errors(metric, container.limits, ("body",))
    if problems:
        raise RequestValidationError(problems)
    return to_sample(metric, now)


def _slow_batch(body: bytes, container: Container, now: datetime) -> list[Sample]:
    """The slow path of a batch: orjson and pydantic, with the documented 413 and 422s."""
    data = _json(body)
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
        raise RequestValidationError(
            [
                {
                    "loc": ["body", "metrics"],
                    "msg": 'expected {"metrics": [...]}',
                    "type": "list_type",
                }
            ]
        )
    items = data["metrics"]
    limit = container.settings.max_batch_size
    if len(items) > limit:
        raise PayloadTooLarge(f"batch of {len(items)} metrics is above the limit of {limit}")
    try:
        metrics = _METRICS.validate_python(items)
    except ValidationError as exc:
        raise _invalid(exc, ("body", "metrics")) from exc
    problems = [
        p
        for i, m in enumerate(metrics)
        for p in limit_errors(m, container.limits, ("body", "metrics", i))
    ]
    if problems:
        raise RequestValidationError(problems)
    return [to_sample(m, now) for m in metrics]


def _refuse_future(samples: list[Sample], container: Container, now: datetime, batch: bool) -> None:
    """422 for samples stamped too far ahead of the clock (they would pin "latest" values)."""
    latest = now + timedelta(seconds=container.settings.max_future_seconds)
    problems = [
        {
            "loc": ["body", "metrics", i, "timestamp"] if batch else ["body", "timestamp"],
            "msg": f"timestamp is more than {container.settings.max_future_seconds:g} seconds "
            "ahead of the server's clock",
            "type": "datetime_future",
        }
        for i, sample in enumerate(samples)
        if sample.ts > latest
    ]
    if problems:
        raise RequestValidationError(problems)


@contextlib.contextmanager
def _counting_rejections(container: Container) -> Iterator[None]:
    try:
        yield
    except (RequestValidationError, InvalidInput):
        container.metrics.ingest_rejected_total.labels(reason="invalid").inc()
        raise
    except PayloadTooLarge:
        container.metrics.ingest_rejected_total.labels(reason="too_large").inc()
        raise


async def _ingest_one(request: Request, source: str) -> Response:
    container = container_of(request)
    body = await request.body()
    now = container.clock.now()
    with _counting_rejections(container):
        key = _idempotency_key(request, body, _one_answer)
        sample = fast.decode_one(body, container.limits, now)
        if sample is None:
            sample = _slow_one(body, container, now)
        _refuse_future([sample], container, now, batch=False)
        result = await container.ingest.ingest(
            [sample], source=source, actor=actor_of(request), key=key
        )
    return _answered(result, _one_answer)


def violations_out(result: IngestResult) -> list[dict[str, Any]]:
    """Each violation of a request's samples, with why it did not act if it did not."""
    out = []
    for d in result.decisions:
        item: dict[str, Any] = {
            "policy_name": d.violation.policy.name,
            "severity": d.violation.policy.severity,
            "action": d.violation.policy.action,
            "target": d.violation.target,
        }
        if d.suppressed is not None:
            item["suppressed"] = d.suppressed.value
        out.append(item)
    return out


def actions_out(result: IngestResult) -> list[dict[str, Any]]:
    """The actions a request's samples created."""
    return [
        {
            "action_id": d.action.id,
            "action": d.action.action,
            "target": d.action.target,
            "status": d.action.status,
        }
        for d in result.decisions
        if d.action is not None
    ]


def _one_answer(result: IngestResult) -> dict[str, Any]:
    evaluated = result.evaluated[0]
    return {
        "ok": True,
        "metric_id": result.metric_ids[0],
        "status": "stored",
        "policies_evaluated": evaluated,
        "violations": violations_out(result),
        "actions": actions_out(result),
        "message": "Metric ingested successfully"
        if evaluated
        else "Metric ingested successfully; it has no target, so no policy was evaluated",
    }


@router.post(
    "",
    status_code=201,
    response_model=IngestOut,
    responses=_ERRORS,
    openapi_extra=_body_schema("MetricIn"),
)
async def ingest(request: Request) -> Response:
    """Store one metric or event, evaluate the policies, and record any resulting actions."""
    return await _ingest_one(request, "api")


@router.post(
    "/agent/metrics",
    status_code=201,
    response_model=IngestOut,
    responses=_ERRORS,
    openapi_extra=_body_schema("MetricIn"),
)
async def ingest_agent(request: Request) -> Response:
    """The same as ``POST /api/v1/ingest``, for agents."""
    return await _ingest_one(request, "agent")


@router.post(
    "/batch",
    status_code=201,
    response_model=BatchOut,
    responses=_ERRORS,
    openapi_extra=_body_schema("BatchIn"),
)
async def ingest_batch(request: Request) -> Response:
    """Store a batch of metrics (all or none), evaluate and record, in one transaction."""
    container = container_of(request)
    body = await request.body()
    now = container.clock.now()
    with _counting_rejections(container):
        key = _idempotency_key(request, body, _batch_answer)
        samples = fast.decode_batch(body, container.limits, now, container.settings.max_batch_size)
        if samples is None:
            samples = _slow_batch(body, container, now)
        _refuse_future(samples, container, now, batch=True)
        if not samples:  # nothing to store, so nothing to remember either
            return json_response({"ok": True, "stored": 0, "violations": [], "actions": []}, 201)
        result = await container.ingest.ingest(
            samples, source="batch", actor=actor_of(request), key=key
        )
    return _answered(result, _batch_answer)


def _batch_answer(result: IngestResult) -> dict[str, Any]:
    return {
        "ok": True,
        "stored": len(result.metric_ids),
        "violations": violations_out(result),
        "actions": actions_out(result),
    }
