"""Prometheus metric definitions. Every metric name of Vigil lives here."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

import vigil


class VigilMetrics:
    """The metrics of one Vigil process, registered on the registry handed in."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info("vigil_build", "Vigil build information.", registry=r)
        self.build_info.info({"version": vigil.__version__})
        self.ingest_total = Counter(
            "vigil_ingest_total", "Metrics accepted by ingest.", ["source"], registry=r
        )
        self.ingest_rejected_total = Counter(
            "vigil_ingest_rejected_total",
            "Ingest requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.policy_evaluations_total = Counter(
            "vigil_policy_evaluations_total",
            "Policy evaluations against an ingested sample.",
            registry=r,
        )
        self.policy_violations_total = Counter(
            "vigil_policy_violations_total",
            "Policy violations found, by policy.",
            ["policy_name", "severity"],
            registry=r,
        )
        self.decisions_total = Counter(
            "vigil_decisions_total",
            "Decisions taken on violations.",
            ["outcome", "reason"],
            registry=r,
        )
        self.actions_total = Counter(
            "vigil_actions_total",
            "Action status transitions, by action and the status reached.",
            ["action", "status"],
            registry=r,
        )
        self.metrics_pruned_total = Counter(
            "vigil_metrics_pruned_total",
            "Stored metric samples deleted by retention.",
            registry=r,
        )
        self.runner_last_run = Gauge(
            "vigil_runner_last_run_timestamp_seconds",
            "When the background runner last finished a pass.",
            registry=r,
        )
        self.runner_duration = Gauge(
            "vigil_runner_duration_seconds",
            "How long the background runner's last pass took.",
            registry=r,
        )

    def policy_loaded(self, name: str, severity: str) -> None:
        """Make a policy's violation series exist (at zero) as soon as it is loaded."""
        self.policy_violations_total.labels(policy_name=name, severity=severity)
