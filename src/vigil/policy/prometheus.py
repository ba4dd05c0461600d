"""A client of a Prometheus-compatible query API (Prometheus, Thanos, Mimir,
VictoriaMetrics): the instant and range queries ``promql`` conditions are asked with.

Errors are of two kinds, told apart because they call for different answers:
:class:`QueryInvalid` (the server judged the query itself bad, or it evaluates to something
other than a vector: fix the policy) and :class:`PrometheusUnavailable` (no usable answer:
connection refused, a timeout, a 5xx, a body that is not the API's JSON: try again later).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from vigil.errors import InvalidInput, Unavailable

Labels = dict[str, str]
Series = tuple[Labels, float | None]
"""One series of an instant vector: its labels and its sample's value (None when the
sample is not a finite float, such as NaN or a native histogram)."""
RangeSeries = tuple[Labels, list[tuple[datetime, float | None]]]
"""One series of a range query's matrix: its labels and its samples, oldest first."""


class QueryInvalid(InvalidInput):
    """The server refused the query (``bad_data``, ``execution``), or its result is not an
    instant vector; the message is the server's own."""


class PrometheusUnavailable(Unavailable):
    """The query API did not answer usefully: unreachable, timed out, a 5xx, or a body
    that is not the query API's."""


class PrometheusClient:
    """Asks ``base_url`` (``http://prometheus:9090``) instant and range queries."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def close(self) -> None:
        await self._http.aclose()

    async def query(self, expr: str, time: datetime) -> list[Series]:
        """The instant vector ``expr`` evaluates to at ``time``."""
        data = await self._ask("/api/v1/query", {"query": expr, "time": _stamp(time)})
        result = _result(data, "vector")
        return [(_labels(item), _value(item.get("value"))) for item in result]

    async def query_range(
        self, expr: str, start: datetime, end: datetime, step: float
    ) -> list[RangeSeries]:
        """The matrix ``expr`` evaluates to from ``start`` to ``end`` every ``step`` seconds."""
        data = await self._ask(
            "/api/v1/query_range",
            {"query": expr, "start": _stamp(start), "end": _stamp(end), "step": f"{step:.3f}"},
        )
        result = _result(data, "matrix")
        matrix: list[RangeSeries] = []
        for item in result:
            points = item.get("values")
            if not isinstance(points, list):
                raise PrometheusUnavailable(f"{self.base_url}: a matrix series without values")
            matrix.append((_labels(item), [_point(p) for p in points]))
        return matrix

    async def _ask(self, path: str, form: Mapping[str, str]) -> Mapping[str, Any]:
        """The ``data`` of a successful answer to ``path``; the error of any other."""
        # Prometheus evaluates no longer than asked: a query cut short answers 503 in time.
        body = {**form, "timeout": f"{self.timeout:g}s"}
        try:
            response = await self._http.post(path, data=body)
        except httpx.TimeoutException as exc:
            raise PrometheusUnavailable(
                f"{self.base_url} did not answer within {self.timeout:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(f"{self.base_url} is unreachable: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise PrometheusUnavailable(
                f"{self.base_url} answered {response.status_code} without the query API's JSON"
            )
        kind = answer.get("errorType", "bad_data")
        if response.status_code in (400, 422) and answer.get("status") == "error":
            if kind != "bad_data":
                # ``execution`` and the like: the query parsed, and failed on the data it
                # met now (many-to-many matching, too many samples); it may run next time.
                raise PrometheusUnavailable(
                    f"{self.base_url} could not run the query now ({kind}): {answer.get('error')}"
                )
            raise QueryInvalid(f"Prometheus refused the query ({kind}): {answer.get('error')}")
        if response.status_code != 200 or answer.get("status") != "success":
            error = answer.get("error") or f"status {answer.get('status')!r}"
            raise PrometheusUnavailable(f"{self.base_url} answered {response.status_code}: {error}")
        data = answer.get("data")
        if not isinstance(data, dict):
            raise PrometheusUnavailable(f"{self.base_url} answered without data")
        return data


def _stamp(when: datetime) -> str:
    return f"{when.timestamp():.3f}"


def _result(data: Mapping[str, Any], wanted: str) -> list[dict[str, Any]]:
    kind = data.get("resultType")
    if kind != wanted:
        raise QueryInvalid(
            f"the query evaluates to a {kind}, not an instant vector: a condition needs a"
            " query whose result is a set of series (as an alerting rule's expression)"
            if wanted == "vector"
            else f"the range query evaluates to a {kind}, not a matrix"
        )
    result = data.get("result")
    if not isinstance(result, list) or not all(isinstance(i, dict) for i in result):
        raise PrometheusUnavailable(f"a {kind} result that is not a list of series")
    return result


def _labels(item: Mapping[str, Any]) -> Labels:
    metric = item.get("metric")
    if not isinstance(metric, dict):
        return {}
    return {str(k): str(v) for k, v in metric.items()}


def _value(sample: Any) -> float | None:
    """The value of ``[ts, "value"]``; None when it is not a finite number."""
    if not isinstance(sample, list) or len(sample) != 2:
        return None
    try:
        value = float(sample[1])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _point(sample: Any) -> tuple[datetime, float | None]:
    if not isinstance(sample, list) or len(sample) != 2:
        raise PrometheusUnavailable("a matrix sample that is not [time, value]")
    try:
        ts = datetime.fromtimestamp(float(sample[0]), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise PrometheusUnavailable(f"a matrix sample with a bad time: {sample[0]!r}") from exc
    return ts, _value(sample)
