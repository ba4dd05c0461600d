"""Vigil's exceptions, one tree rooted at :class:`VigilError`.

    VigilError
    ├── InvalidInput            a client sent something Vigil refuses (HTTP 422)
    │   ├── Undecodable         a body in another system's wire format that does not decode (400)
    │   ├── UnsupportedMedia    a body in a media type or encoding a route does not take (415)
    │   ├── PolicyInvalid       a policy document does not validate
    │   ├── RemediationsInvalid       (remediation.config) a remediations file is invalid
    │   └── IdempotencyKeyReused      (remediation.service) one (action, attempt), two requests
    ├── NotFound                an id or name that does not exist (HTTP 404)
    ├── Conflict                the request clashes with current state (HTTP 409)
    │   ├── DuplicatePolicy
    │   ├── ActionAlreadyOpen
    │   ├── IllegalTransition   a status change outside the allowed graph
    │   └── StaleAttempt        a worker's claim on an action no longer holds
    ├── PayloadTooLarge         body or batch above the configured limit (HTTP 413)
    ├── Unavailable             a dependency (database, Redis) does not answer (HTTP 503)
    ├── SignatureInvalid        (remediation.signing) unsigned/stale/bad request (HTTP 401)
    ├── PluginLoadError         (remediation.registry) an installed plugin cannot load
    └── RemediatorNotConfigured (remediation.app) no VIGIL_REMEDIATOR_SECRET

Foreign exceptions (SQLAlchemy, drivers) are translated at the boundary that catches them.
"""

from __future__ import annotations

from typing import Any


class VigilError(Exception):
    """Root of every error Vigil raises on purpose."""

    status_code = 500

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail if detail is not None else message


class InvalidInput(VigilError):
    status_code = 422


class PolicyInvalid(InvalidInput):
    """A policy (from the API or a file) does not validate; ``detail`` lists the fields."""


class Undecodable(InvalidInput):
    """A body in another system's wire format (Prometheus remote write, OTLP) that does not
    decode, or that says what Vigil cannot store. A 400, as those protocols expect: their
    clients do not send a 4xx request again."""

    status_code = 400


class UnsupportedMedia(InvalidInput):
    """A body in a media type or content encoding the route does not take."""

    status_code = 415


class Forbidden(VigilError):
    status_code = 403


class NotFound(VigilError):
    status_code = 404


class Conflict(VigilError):
    status_code = 409


class DuplicatePolicy(Conflict):
    pass


class ActionAlreadyOpen(Conflict):
    pass


class IllegalTransition(Conflict):
    pass


class StaleAttempt(Conflict):
    """The action moved on (reclaimed, cancelled, another attempt) since a worker claimed it."""


class PayloadTooLarge(VigilError):
    status_code = 413


class Unavailable(VigilError):
    status_code = 503
