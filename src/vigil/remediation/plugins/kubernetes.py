"""The ``kubernetes`` plugin: scale or rollout-restart a workload, or delete a pod.

lightkube is an optional extra (``pip install vigil[kubernetes]``), so it is imported inside
the methods: discovering the plugin never needs it, checking or running it does.

Outcome by API answer: 404 (the object is not there), 401/403 (not allowed) and other 4xx
are permanent failures; 409 (a concurrent change), 429, 5xx, connection errors and timeouts
are retryable. A configuration that cannot be loaded is permanent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, ClassVar, cast

from vigil.clock import Clock, SystemClock
from vigil.remediation.plugins.base import (
    PluginCall,
    PluginConfigError,
    PluginFailed,
    PluginResult,
    refuse_unknown_options,
)

if TYPE_CHECKING:
    import httpx2
    from lightkube import AsyncClient

INSTALL_HINT = "the kubernetes plugin needs `pip install vigil[kubernetes]`"
OPERATIONS = ("scale", "restart", "delete-pod")
KINDS = ("deployment", "statefulset")
OPTIONS = frozenset(
    {"operation", "kind", "name", "namespace", "delta", "replicas", "min", "max", "kubeconfig"}
)
SCALE_ONLY = ("delta", "replicas", "min", "max")
# The annotation `kubectl rollout restart` sets; changing it rolls the pods.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Recorded by the API server as the writer of the fields Vigil changes.
FIELD_MANAGER = "vigil"
# A retried 4xx would get the same answer; these ones are about the moment, not the request.
RETRYABLE_CODES = frozenset({408, 409, 429})

_PLACEHOLDER = re.compile(r"\{[^{}]+\}")
# Object names (DNS-1123 subdomain) and namespaces (DNS-1123 label). Checked before a name
# is put in a URL path: a rendered target must not be able to address anything else.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _is_placeholder(value: object) -> bool:
    """Whether ``value`` is a string still holding a ``{...}`` placeholder."""
    return isinstance(value, str) and _PLACEHOLDER.search(value) is not None


@dataclass(frozen=True, slots=True)
class KubernetesSpec:
    """Validated options of one operation.

    Before rendering, a field whose option is still a placeholder holds that raw string.
    """

    operation: str
    kind: str
    name: str
    namespace: str
    delta: int | None
    replicas: int | None
    min: int | None
    max: int | None
    kubeconfig: str | None

    @property
    def object(self) -> str:
        """How messages name the object: ``deployment shop/web``."""
        return f"{self.kind} {self.namespace}/{self.name}"


def parse_options(options: dict[str, Any], *, rendered: bool) -> KubernetesSpec:
    """Validate ``options``; placeholders pass unless ``rendered`` (raises PluginConfigError)."""
    refuse_unknown_options("kubernetes", options, OPTIONS)

    def pending(value: object) -> bool:
        return not rendered and _is_placeholder(value)

    operation = options.get("operation")
    if not pending(operation) and operation not in OPERATIONS:
        raise PluginConfigError(
            f"kubernetes: `operation` must be one of {', '.join(OPERATIONS)}, got {operation!r}"
        )

    kind = _kind(operation, options.get("kind"), pending)
    name, namespace = _object_name(options, pending)

    kubeconfig = options.get("kubeconfig")
    if kubeconfig is not None and (not isinstance(kubeconfig, str) or not kubeconfig):
        raise PluginConfigError("kubernetes: `kubeconfig` must be a file path")

    numbers = _scale_numbers(options, operation, pending)
    low, high = numbers["min"], numbers["max"]
    if isinstance(low, int) and isinstance(high, int) and high < low:
        raise PluginConfigError(f"kubernetes: `max` ({high}) is below `min` ({low})")

    return KubernetesSpec(
        operation=str(operation),
        kind=str(kind),
        name=name,
        namespace=namespace,
        delta=numbers["delta"],
        replicas=numbers["replicas"],
        min=low,
        max=high,
        kubeconfig=kubeconfig,
    )


def _kind(operation: object, kind: object, pending: Callable[[object], bool]) -> object:
    """The kind of object ``operation`` acts on: always a pod for delete-pod."""
    if operation == "delete-pod":
        if kind not in (None, "pod"):
            raise PluginConfigError("kubernetes: delete-pod takes no `kind` (it is always a pod)")
        return "pod"
    if kind is None and operation in ("scale", "restart"):
        raise PluginConfigError(f"kubernetes: {operation} needs `kind` ({' or '.join(KINDS)})")
    if kind is not None and not pending(kind) and kind not in KINDS:
        raise PluginConfigError(f"kubernetes: `kind` must be {' or '.join(KINDS)}, got {kind!r}")
    return kind


def _object_name(options: dict[str, Any], pending: Callable[[object], bool]) -> tuple[str, str]:
    """``(name, namespace)``, each valid in a URL path (or still a placeholder)."""
    name = options.get("name")
    if not isinstance(name, str) or not name:
        raise PluginConfigError('kubernetes: `name` is required (usually "{target}")')
    if not pending(name) and (len(name) > 253 or not _NAME.fullmatch(name)):
        raise PluginConfigError(f"kubernetes: `name` {name!r} is not a valid object name")

    namespace = options.get("namespace", "default")
    if not isinstance(namespace, str) or not (
        pending(namespace) or (len(namespace) <= 63 and _NAMESPACE.fullmatch(namespace))
    ):
        raise PluginConfigError(f"kubernetes: `namespace` {namespace!r} is not a valid namespace")
    return name, namespace


def _scale_numbers(
    options: dict[str, Any], operation: object, pending: Callable[[object], bool]
) -> dict[str, Any]:
    """The options only scale takes, by name (None when not given)."""
    numbers: dict[str, Any] = {}
    for option in SCALE_ONLY:
        value = options.get(option)
        if value is not None and not pending(value):
            value = _integer(value, option, signed=option == "delta")
        numbers[option] = value

    given = [option for option in SCALE_ONLY if numbers[option] is not None]
    if operation == "scale":
        if (numbers["delta"] is None) == (numbers["replicas"] is None):
            raise PluginConfigError("kubernetes: scale needs exactly one of `delta` or `replicas`")
    elif given and not pending(operation):
        raise PluginConfigError(
            f"kubernetes: {', '.join(f'`{o}`' for o in given)} only apply to scale"
        )
    return numbers


def _integer(value: object, option: str, *, signed: bool) -> int:
    """An int, or a string of digits (with a sign when ``signed``), as rendered options are."""
    pattern = r"[+-]?\d+" if signed else r"\d+"
    if isinstance(value, str) and re.fullmatch(pattern, value.strip()):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and (signed or value >= 0):
        return value
    wanted = "an integer" if signed else "a whole number (0 or more)"
    raise PluginConfigError(f"kubernetes: `{option}` must be {wanted}, got {value!r}")


def target_replicas(current: int, spec: KubernetesSpec) -> tuple[int, bool]:
    """The replica count to set and whether ``min``/``max`` changed it.

    A step (``delta``) is never turned around by the bounds: scaling up from above ``max``,
    or down from below ``min``, leaves the count where it is rather than moving it the
    other way.
    """
    wanted = current + spec.delta if spec.delta is not None else spec.replicas
    assert wanted is not None  # parse_options demands one of the two
    bounded = max(wanted, spec.min if spec.min is not None else 0)
    if spec.max is not None:
        bounded = min(bounded, spec.max)
    if spec.delta is not None:
        bounded = max(bounded, current) if spec.delta > 0 else min(bounded, current)
    return bounded, bounded != wanted


def _require_lightkube() -> None:
    try:
        import lightkube  # noqa: F401
    except ImportError as exc:
        raise PluginConfigError(INSTALL_HINT) from exc


class KubernetesPlugin:
    """Scales, rollout-restarts (deployments, statefulsets) or deletes pods."""

    name: ClassVar[str] = "kubernetes"

    def __init__(self, clock: Clock | None = None) -> None:
        # The clock stamps the restart annotation.
        self._clock = clock or SystemClock()

    def check(self, options: dict[str, Any]) -> None:
        """Raise PluginConfigError if lightkube is missing or ``options`` are invalid."""
        _require_lightkube()
        parse_options(options, rendered=False)

    async def run(self, call: PluginCall) -> PluginResult:
        """Make the change; raise PluginFailed (retryable or not) if it did not happen."""
        try:
            _require_lightkube()
            spec = parse_options(call.options, rendered=True)
        except PluginConfigError as exc:
            raise PluginFailed(str(exc), retryable=False) from exc

        import httpx2

        client = _client(spec, call.timeout)
        try:
            async with client:
                if spec.operation == "scale":
                    return await self._scale(client, spec)
                if spec.operation == "restart":
                    return await self._restart(client, spec)
                return await self._delete_pod(client, spec)
        except httpx2.HTTPStatusError as exc:
            raise _api_failure(exc, spec) from exc
        except httpx2.TimeoutException as exc:
            raise PluginFailed(
                f"kubernetes {spec.operation} {spec.object}: timed out after {call.timeout:g}s"
            ) from exc
        except httpx2.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise PluginFailed(
                f"kubernetes {spec.operation} {spec.object}: API server unreachable: {reason}"
            ) from exc

    async def _scale(self, client: AsyncClient, spec: KubernetesSpec) -> PluginResult:
        from lightkube.models.autoscaling_v1 import Scale
        from lightkube.resources.apps_v1 import Deployment, StatefulSet
        from lightkube.types import PatchType

        resource = Deployment.Scale if spec.kind == "deployment" else StatefulSet.Scale
        scale = cast("Scale", await client.get(resource, spec.name, namespace=spec.namespace))
        current = (scale.spec.replicas if scale.spec else None) or 0
        target, clamped = target_replicas(current, spec)
        details = {
            "kind": spec.kind,
            "name": spec.name,
            "namespace": spec.namespace,
            "from": current,
            "to": target,
            "clamped": clamped,
        }
        if target == current:
            return PluginResult(
                f"nothing to do: {spec.object} already has {current} replicas", details
            )
        patch: dict[str, Any] = {"spec": {"replicas": target}}
        version = scale.metadata.resourceVersion if scale.metadata else None
        if version:
            # The count was computed from this version: if it changed since, the server
            # answers 409 and the retry computes again from the new count.
            patch["metadata"] = {"resourceVersion": version}
        await client.patch(
            resource, spec.name, patch, namespace=spec.namespace, patch_type=PatchType.MERGE
        )
        return PluginResult(f"scaled {spec.object} from {current} to {target}", details)

    async def _restart(self, client: AsyncClient, spec: KubernetesSpec) -> PluginResult:
        from lightkube.resources.apps_v1 import Deployment, StatefulSet
        from lightkube.types import PatchType

        resource = Deployment if spec.kind == "deployment" else StatefulSet
        # kubectl writes RFC 3339 seconds; UTC keeps it independent of the host's zone.
        at = self._clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}
        await client.patch(
            resource, spec.name, patch, namespace=spec.namespace, patch_type=PatchType.STRATEGIC
        )
        details = {
            "kind": spec.kind,
            "name": spec.name,
            "namespace": spec.namespace,
            "restarted_at": at,
        }
        return PluginResult(f"rollout restart of {spec.object} at {at}", details)

    async def _delete_pod(self, client: AsyncClient, spec: KubernetesSpec) -> PluginResult:
        from lightkube.resources.core_v1 import Pod

        await client.delete(Pod, spec.name, namespace=spec.namespace)
        details = {"kind": "pod", "name": spec.name, "namespace": spec.namespace}
        return PluginResult(f"deleted {spec.object}", details)


def _client(spec: KubernetesSpec, timeout: float) -> AsyncClient:
    """A client for the configured cluster; a configuration that does not load is permanent."""
    import httpx2
    from lightkube import AsyncClient, KubeConfig

    try:
        config = KubeConfig.from_file(spec.kubeconfig) if spec.kubeconfig else None
        return AsyncClient(
            config=config, timeout=httpx2.Timeout(timeout), field_manager=FIELD_MANAGER
        )
    except Exception as exc:
        # YAML, missing keys or contexts, unreadable certificate or token files: a kubeconfig
        # fails to load in many ways, and each needs an operator, not another attempt.
        where = spec.kubeconfig or "in-cluster or ~/.kube/config"
        raise PluginFailed(
            f"kubernetes: cannot load the cluster configuration ({where}): {exc}",
            retryable=False,
        ) from exc


def _api_failure(exc: httpx2.HTTPStatusError, spec: KubernetesSpec) -> PluginFailed:
    """Classify an error answer of the API server."""
    code = exc.response.status_code
    status = getattr(exc, "status", None)  # lightkube's ApiError carries the Status object
    reason = (status.message if status is not None else None) or exc.response.text[:500]
    what = f"kubernetes {spec.operation} {spec.object}"
    details = {"status_code": code, "reason": reason}
    if code == 404:
        return PluginFailed(f"{what}: not found", retryable=False, details=details)
    if code in (401, 403):
        return PluginFailed(f"{what}: not allowed: {reason}", retryable=False, details=details)
    retryable = code in RETRYABLE_CODES or code >= 500
    return PluginFailed(
        f"{what}: API answered {code}: {reason}", retryable=retryable, details=details
    )
