"""The remediator's Prometheus metrics, registered on the registry of the app that owns them."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

Outcome = Literal["success", "failed", "duplicate", "in_progress", "rejected"]
"""How a remediate request ended: ran (``success``/``failed``), answered from the record
(``duplicate``), still running elsewhere (``in_progress``) or refused (``rejected``:
bad signature or body)."""

UNKNOWN_ACTION = "unknown"
"""The ``action`` label of a request refused before its body was read."""


class RemediatorMetrics:
    """Counters and timings of one remediator (or of a worker remediating in-process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.remediations_total = Counter(
            "vigil_remediations_total",
            "Remediate requests, by action and outcome.",
            ["action", "status"],
            registry=self.registry,
        )
        self.duration_seconds = Histogram(
            "vigil_remediation_duration_seconds",
            "Time spent running remediations (not answering duplicates), by action.",
            ["action"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )

    def count(self, action: str, outcome: Outcome) -> None:
        self.remediations_total.labels(action=action, status=outcome).inc()

    def ran(self, action: str, outcome: Outcome, seconds: float) -> None:
        self.count(action, outcome)
        self.duration_seconds.labels(action=action).observe(seconds)
