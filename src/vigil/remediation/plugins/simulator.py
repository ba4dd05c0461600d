"""The ``simulator`` plugin: acts on the simulated fleet, so an action's effect shows up in
the fleet's next metrics (the demo's "scale up the web tier").

Operations (``operation``, else from the action's name):

- ``scale-up`` adds ``replicas`` (the option, else the action's ``params.replicas``, else 1);
- ``scale-down`` removes them (never below one replica);
- ``restart`` (the actions ``restart-service`` and ``restart``) resets the service's memory
  and gets its heartbeats flowing again.

The service is ``service`` (option), else the target: a service (``web``) or one of its
hosts (``web-01``, which means its service).

Where the fleet is: in the ``vigil serve`` process that also runs the worker (the embedded
default), the plugin acts on that process's fleet directly. Anywhere else (a separate
``vigil worker`` or ``vigil remediator``), or when ``url`` is given, it calls the fleet API
of docs/api.md at ``url`` (else the setting ``VIGIL_API_URL``), with the key ``api_key`` (else
``VIGIL_API_KEY``) when access control is on; both settings are read as every setting is,
from the environment or ``.env``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from vigil.remediation.placeholders import PlaceholderError, has_placeholder
from vigil.remediation.plugins.base import (
    PluginCall,
    PluginConfigError,
    PluginFailed,
    PluginResult,
    refuse_unknown_options,
)
from vigil.settings import client_settings
from vigil.simulator.fleet import MAX_REPLICAS, Fleet
from vigil.strict import CLIENT_HEADERS

OPTIONS = frozenset({"operation", "service", "replicas", "url", "api_key"})
OPERATIONS = frozenset({"scale-up", "scale-down", "restart"})
BY_ACTION = {
    "scale-up": "scale-up",
    "scale-down": "scale-down",
    "restart-service": "restart",
    "restart": "restart",
}
FLEET_PATH = "/api/v1/simulator/fleet"


def _pending(value: object) -> bool:
    """Whether ``value`` is text still holding a placeholder (checked once rendered)."""
    try:
        return isinstance(value, str) and has_placeholder(value)
    except PlaceholderError:
        return False  # a malformed one: the value is checked as it is, and refused


def _check(options: dict[str, Any], *, rendered: bool) -> None:
    refuse_unknown_options("simulator", options, OPTIONS)
    operation = options.get("operation")
    if operation is not None and operation not in OPERATIONS:
        raise PluginConfigError(
            f"simulator: `operation` must be one of {', '.join(sorted(OPERATIONS))}, "
            f"got {operation!r}"
        )
    replicas = options.get("replicas")
    if replicas is not None and not (not rendered and _pending(replicas)):
        _replicas(replicas)
    for name in ("service", "url", "api_key"):
        value = options.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise PluginConfigError(f"simulator: `{name}` must be a non-empty string")
    url = options.get("url")
    if isinstance(url, str) and not (not rendered and _pending(url)):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PluginConfigError("simulator: `url` must be an http or https URL (Vigil's API)")


def _replicas(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
        raise PluginConfigError(
            f"simulator: `replicas` must be a whole number from 1 to {MAX_REPLICAS}, got {value!r}"
        )
    return value


class SimulatorPlugin:
    """Scales or restarts a service of the simulated fleet."""

    name: ClassVar[str] = "simulator"

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._local: Callable[[], Fleet] | None = None
        self._transport = transport

    def attach(self, fleet: Callable[[], Fleet]) -> None:
        """Act on this process's fleet (``fleet()`` gives the current one) unless ``url``."""
        self._local = fleet

    def check(self, options: dict[str, Any]) -> None:
        """Raise PluginConfigError naming the first problem in ``options``."""
        _check(options, rendered=False)

    async def run(self, call: PluginCall) -> PluginResult:
        try:
            _check(call.options, rendered=True)
            operation = call.options.get("operation") or BY_ACTION.get(call.action)
            if operation is None:
                raise PluginConfigError(
                    f"simulator: no `operation` given and action {call.action!r} is not one "
                    f"of {', '.join(sorted(BY_ACTION))}"
                )
            count = _replicas(call.options.get("replicas", call.params.get("replicas", 1)))
        except PluginConfigError as exc:
            raise PluginFailed(str(exc), retryable=False) from exc
        service = call.options.get("service") or call.target
        url = call.options.get("url")
        if url is None and self._local is not None:
            return self._run_local(self._local(), operation, service, count)
        default_url, default_key = client_settings()
        url = url or default_url
        if not url:
            raise PluginFailed(
                "simulator: no fleet in this process; set the `url` option or VIGIL_API_URL "
                "to the Vigil API that runs the simulator",
                retryable=False,
            )
        key = call.options.get("api_key") or default_key
        return await self._run_remote(url, key, operation, service, count, call.timeout)

    def _run_local(self, fleet: Fleet, operation: str, target: str, count: int) -> PluginResult:
        service = fleet.service_of(target)
        if service is None:
            raise PluginFailed(
                f"simulator: no service or host {target!r} in the simulated fleet",
                retryable=False,
            )
        before = fleet.services[service].replicas
        if operation == "restart":
            fleet.restart(service)
            return PluginResult(
                f"restarted simulated service {service}",
                {"service": service, "restarts": fleet.services[service].restarts, "via": "local"},
            )
        delta = count if operation == "scale-up" else -count
        after = fleet.scale(service, delta=delta)
        return PluginResult(
            f"scaled simulated service {service} from {before} to {after} replicas",
            {"service": service, "replicas_before": before, "replicas": after, "via": "local"},
        )

    async def _run_remote(
        self,
        url: str,
        key: str | None,
        operation: str,
        target: str,
        count: int,
        seconds: float,
    ) -> PluginResult:
        """One call to the fleet API (which takes a host for its service too)."""
        headers = {"x-api-key": key, **CLIENT_HEADERS} if key else dict(CLIENT_HEADERS)
        base = url.rstrip("/")
        where = f"{FLEET_PATH}/{quote(target, safe='')}"
        try:
            async with httpx.AsyncClient(
                base_url=base, headers=headers, timeout=seconds, transport=self._transport
            ) as client:
                if operation == "restart":
                    response = await client.post(f"{where}/restart")
                else:
                    delta = count if operation == "scale-up" else -count
                    response = await client.post(f"{where}/scale", json={"delta": delta})
        except httpx.TimeoutException as exc:
            raise PluginFailed(f"simulator: {base} timed out after {seconds:g}s") from exc
        except httpx.HTTPError as exc:
            raise PluginFailed(f"simulator: {base}: {exc or type(exc).__name__}") from exc
        done = _answer(response, f"{operation} of {target}")
        service = done["service"]
        if operation == "restart":
            return PluginResult(
                f"restarted simulated service {service}",
                {"service": service, "restarts": done["restarts"], "via": base},
            )
        before, after = done["replicas_before"], done["replicas"]
        return PluginResult(
            f"scaled simulated service {service} from {before} to {after} replicas",
            {"service": service, "replicas_before": before, "replicas": after, "via": base},
        )


def _answer(response: httpx.Response, doing: str) -> dict[str, Any]:
    """The JSON of a 2xx answer; PluginFailed otherwise (retryable for 408, 429 and 5xx)."""
    code = response.status_code
    if 200 <= code < 300:
        body: dict[str, Any] = response.json()
        return body
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:200]
    retryable = code in (408, 429) or code >= 500
    raise PluginFailed(
        f"simulator: {doing} answered {code}: {detail}",
        retryable=retryable,
        details={"status_code": code},
    )
