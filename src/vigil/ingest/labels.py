"""Targets from labels: which label of an alert, a remote_write series, an OTLP data point
or a PromQL series names the target it is about."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

TARGET_LABELS: tuple[str, ...] = ("target", "host", "instance", "pod", "service", "job")
"""Where a Prometheus-style label set names its target, first present wins."""

OTLP_TARGET_ATTRIBUTES: tuple[str, ...] = (
    "host.name",
    "service.instance.id",
    "k8s.pod.name",
    "service.name",
)
"""Where an OpenTelemetry resource (or data point) names its target, first present wins."""

_PORT = re.compile(r":\d{1,5}$")


def strip_port(value: str) -> str:
    """``host:9100`` → ``host``; ``[::1]:9100`` → ``[::1]``; a value without a port as is."""
    if value.startswith("[") and "]" in value:
        return value[: value.index("]") + 1]
    if value.count(":") == 1:
        return _PORT.sub("", value)
    return value


def target_of(
    labels: Mapping[str, str],
    label: str | None = None,
    order: Sequence[str] = TARGET_LABELS,
) -> str | None:
    """The target a label set is about: the value of ``label`` when given, else of the
    first label of ``order`` present and not empty (an ``instance`` without its ``:port``);
    None when there is none."""
    for name in (label,) if label is not None else order:
        value = labels.get(name)
        if value:
            return strip_port(value) if name == "instance" else value
    return None
