"""Roles and the permission each route needs (docs/api.md "Access control")."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    """Reads everything except keys."""
    AGENT = "agent"
    """May only ingest."""
    OPERATOR = "operator"
    """A viewer that may also act: manual actions, cancel, approve/reject, silences,
    pause/resume, dead-letter redrive, breaker reset, evaluate and backtest."""
    ADMIN = "admin"
    """Everything, including policies and keys."""


OPEN: frozenset[Role] = frozenset()
"""No key needed (``/health``, ``/ready``)."""
READ = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN})
INGEST = frozenset({Role.AGENT, Role.ADMIN})
OPERATE = frozenset({Role.OPERATOR, Role.ADMIN})
ADMIN = frozenset({Role.ADMIN})

OPEN_PATHS = frozenset({"/health", "/ready"})
"""Paths every caller may use, whatever its host or key: what probes call."""
INGEST_PATHS = frozenset({"/api/v1/write", "/v1/metrics", "/api/v1/alerts/alertmanager"})
"""Paths where machines send what Vigil hears (besides ``/api/v1/ingest...``): Prometheus
remote write, OTLP/HTTP metrics and Alertmanager's webhook; agents' (or admins') to call."""
SIGNED_PATHS = frozenset({"/api/v1/integrations/slack/interactions"})
"""Paths whose requests bring their own proof instead of an API key, checked by the route
before it reads anything: Slack's request signature (``X-Slack-Signature``)."""
_OPERATE: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/api/v1/actions"),
        ("PUT", "/api/v1/actions/{action_id}/cancel"),
        ("POST", "/api/v1/actions/{action_id}/approve"),
        ("POST", "/api/v1/actions/{action_id}/reject"),
        ("POST", "/api/v1/silences"),
        ("DELETE", "/api/v1/silences/{silence_id}"),
        ("POST", "/api/v1/automation/pause"),
        ("POST", "/api/v1/automation/resume"),
        ("POST", "/api/v1/queue/dead-letter/redrive"),
        ("POST", "/api/v1/policies/{name}/reset"),
        ("POST", "/api/v1/policies/evaluate"),
        ("POST", "/api/v1/policies/backtest"),
        ("POST", "/api/v1/policies/{name}/backtest"),
        ("POST", "/api/v1/simulator/fleet/{service}/scale"),
        ("POST", "/api/v1/simulator/start"),
        ("POST", "/api/v1/simulator/stop"),
        ("POST", "/api/v1/ui/simulator/start"),
        ("POST", "/api/v1/ui/simulator/stop"),
        ("POST", "/api/v1/simulator/fleet/{service}/restart"),
    }
)


def permission_of(method: str, path: str, *, metrics_auth: bool = False) -> frozenset[Role]:
    """The roles that may call ``method path`` (a route template); :data:`OPEN` for none
    needed."""
    if path in OPEN_PATHS or path in SIGNED_PATHS:
        return OPEN
    if path == "/metrics":
        return READ if metrics_auth else OPEN
    if path.startswith("/api/v1/keys"):
        return ADMIN
    if method in ("GET", "HEAD"):
        return READ
    if path.startswith("/api/v1/ingest") or path in INGEST_PATHS:
        return INGEST
    if (method, path) in _OPERATE:
        return OPERATE
    return ADMIN
