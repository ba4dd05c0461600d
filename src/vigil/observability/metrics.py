"""Prometheus metric definitions. Every metric name of Vigil lives here."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

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
        self.ingest_dropped_total = Counter(
            "vigil_ingest_dropped_total",
            "Samples received but not stored, by reason (unused: no enabled policy reads"
            " the metric; not_finite: NaN or infinite; future: stamped too far ahead;"
            " unsupported: OTLP histogram, exponential-histogram and summary points;"
            " invalid: OTLP points beyond the limits).",
            ["reason"],
            registry=r,
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
        self.promql_queries_total = Counter(
            "vigil_promql_queries_total",
            "PromQL queries the runner asked, by result (ok; unavailable: no answer;"
            " error: the query was refused or is not an instant vector).",
            ["result"],
            registry=r,
        )
        self.runner_promql_unavailable = Gauge(
            "vigil_runner_promql_unavailable",
            "promql policies whose queries failed in the runner's last pass (nothing of"
            " theirs was decided).",
            registry=r,
        )

        self.tasks_total = Counter(
            "vigil_tasks_total",
            "Queue tasks handled by workers, by result (completed, failed, retried, "
            "discarded, dead_lettered).",
            ["result"],
            registry=r,
        )
        self.worker_active_tasks = Gauge(
            "vigil_worker_active_tasks",
            "Tasks this process's worker is running now.",
            registry=r,
        )
        self.action_duration_seconds = Histogram(
            "vigil_action_duration_seconds",
            "How long one attempt of an action took at the remediator.",
            ["action"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.queue_depth = Gauge(
            "vigil_queue_depth",
            "Tasks waiting in the queue or in flight (read from the queue at scrape time).",
            registry=r,
        )
        self.queue_dead_letter = Gauge(
            "vigil_queue_dead_letter",
            "Tasks in the dead letter (read from the queue at scrape time).",
            registry=r,
        )
        self.reconciled_total = Counter(
            "vigil_reconciled_total",
            "Actions the reconciler re-dispatched, by why (stale dispatch, expired lease).",
            ["reason"],
            registry=r,
        )
        self.notifications_total = Counter(
            "vigil_notifications_total",
            "Notifications handled per channel, by event and result: delivered, retrying, "
            "failed, held (for its route's group), skipped (a repeat within "
            "repeat_interval), none (no route sends it anywhere; channel empty).",
            ["event", "channel", "result"],
            registry=r,
        )
        self.verifications_total = Counter(
            "vigil_verifications_total",
            "Actions verified after they completed, by result (verified, failed).",
            ["result"],
            registry=r,
        )
        self.http_requests_total = Counter(
            "vigil_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_request_duration_seconds = Histogram(
            "vigil_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

    def policy_loaded(self, name: str, severity: str) -> None:
        """Make a policy's violation series exist (at zero) as soon as it is loaded."""
        self.policy_violations_total.labels(policy_name=name, severity=severity)
