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
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_TARGET = 255
"""The width of every target column."""


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


def usable_target(target: str | None) -> str | None:
    """``target`` trimmed, if it can be one (not empty, at most 255 characters, no control
    characters: what every target Vigil stores and hands to remediations must be); else
    None."""
    if target is None:
        return None
    target = target.strip()
    if not target or len(target) > MAX_TARGET or _CONTROL.search(target):
        return None
    return target


def usable_tags(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that can be tags: neither name nor value has a control character (a tag
    may end up in a log line, a placeholder, a notification)."""
    return {k: v for k, v in labels.items() if not _CONTROL.search(k) and not _CONTROL.search(v)}
