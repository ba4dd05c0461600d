"""The schema, as SQLAlchemy Core tables. Alembic migrations must produce exactly this."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from vigil.db.types import BigId, Json, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

OPEN_STATUSES = ("pending", "running", "awaiting_approval")
"""Statuses of an action that is still open; the partial unique index below keys on them."""
_OPEN = "status IN (" + ", ".join(f"'{s}'" for s in OPEN_STATUSES) + ")"

metrics = Table(
    "metrics",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("value", Float, nullable=False),
    Column("target", String(255), nullable=True),
    Column("tags", Json, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    # (name, ts), not (target, name, ts): ingest appends to each metric's run of the index
    # instead of touching one leaf per series, and history queries (windows, backtests) read
    # one metric across its targets over a time range.
    Index("ix_metrics_name_ts", "name", "ts"),
    Index("ix_metrics_ts", "ts"),
)

metric_latest = Table(
    "metric_latest",
    metadata,
    Column("target", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("value", Float, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
)

ingest_keys = Table(
    "ingest_keys",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("response", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_ingest_keys_created_at", "created_at"),
)
"""The ``Idempotency-Key`` of each ingest request stored, with the answer it got: written
in the samples' transaction, so a retry of a request that was stored is answered from here
(on any replica) instead of being stored twice. ``status_code`` and ``response`` (the JSON
body as sent, byte for byte) are set before that transaction commits; pruned after
``VIGIL_IDEMPOTENCY_TTL_SECONDS``."""

policies = Table(
    "policies",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("severity", String(16), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("spec", Json, nullable=False),
    Column("source", String(16), nullable=False),
    Column("file_spec", Json, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

policy_revision = Table(
    "policy_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigId, nullable=False),
    # Grows whenever a (policy, target) starts or stops firing, so every process's ingest
    # notices which pairs it may resolve.
    Column("firing_revision", BigId, nullable=False, server_default=text("0")),
)
"""A single row whose counter grows with every policy change, so every process notices."""

actions = Table(
    "actions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("policy_name", String(255), nullable=True),
    Column("dedup_key", String(300), nullable=False),
    Column("target", String(255), nullable=False),
    Column("action", String(255), nullable=False),
    Column("params", Json, nullable=False),
    Column("severity", String(16), nullable=True),
    Column("status", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("details", Text, nullable=True),
    Column("result", Json, nullable=True),
    Column("error_message", Text, nullable=True),
    Column("trigger_value", Float, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime, nullable=True),
    Column("completed_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("verification", Json, nullable=True),
    # The attempt the next dispatch runs (invariant 7): attempts + 1 for a fresh try, the
    # same as attempts for a reclaimed one. A task for any other attempt is stale.
    Column("next_attempt", Integer, nullable=False, server_default=text("1")),
    # Attempts up to this one were spent before the last dead-letter redrive; the retry
    # budget counts the attempts after it.
    Column("attempt_floor", Integer, nullable=False, server_default=text("0")),
    # When a task for the pending attempt was last handed to the queue (or is due from the
    # delayed set); the reconciler re-dispatches pending actions whose dispatch is stale.
    Column("dispatched_at", UtcDateTime, nullable=True),
    # Which worker runs it and until when; renewed while running, reclaimed once expired.
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires_at", UtcDateTime, nullable=True),
    # The firing episode of its (policy, target) that created it, and its place in the
    # policy's escalation list (0: the policy's own action).
    Column("episode", Integer, nullable=True),
    Column("escalation_step", Integer, nullable=False, server_default=text("0")),
    # An action awaiting approval is cancelled when this passes.
    Column("approval_expires_at", UtcDateTime, nullable=True),
    # The request that led to it (an ingest, a manual action): its logs share the id.
    Column("request_id", String(128), nullable=True),
    # The tags of the violation that created it (of its episode, for an escalation; given
    # with a manual one): its remediation's ``{tags.NAME}`` placeholders read them. Null for
    # actions recorded before tags were kept.
    Column("tags", Json, nullable=True),
    # Invariant 2: at most one open action per (policy, target) -- dedup_key is
    # "policy:<name>" -- and per (action, target) for manual ones ("manual:<action>").
    Index(
        "uq_actions_open_dedup_key_target",
        "dedup_key",
        "target",
        unique=True,
        sqlite_where=text(_OPEN),
        postgresql_where=text(_OPEN),
    ),
    Index("ix_actions_dedup_key_target_completed_at", "dedup_key", "target", "completed_at"),
    Index("ix_actions_status", "status"),
    Index("ix_actions_created_at", "created_at"),
    Index("ix_actions_policy_name_created_at", "policy_name", "created_at"),
)

action_history = Table(
    "action_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "action_id",
        BigId,
        ForeignKey("actions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("from_status", String(32), nullable=True),
    Column("to_status", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("actor", String(255), nullable=False),
    Index("ix_action_history_action_id", "action_id"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(512), nullable=False),
    Column("before", Json, nullable=True),
    Column("after", Json, nullable=True),
    Column("request_id", String(128), nullable=True),
    # The hash chain: the previous row's hash (the first row: the genesis hash) and this
    # row's own, over its content and that link.
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ix_audit_at", "at"),
)

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_hash", String(64), nullable=False),
)
"""The end of the audit chain (one row, id 1): appends lock it, so the chain never forks,
and a chain whose last rows were removed no longer ends where it says."""

remediation_runs = Table(
    "remediation_runs",
    metadata,
    Column("action_id", BigId, primary_key=True, autoincrement=False),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("action", String(255), nullable=False),
    Column("target", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("result", Json, nullable=True),
    Column("owner", String(255), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("expires_at", UtcDateTime, nullable=False),
)
"""The remediator's record of each (action_id, attempt) it ran: invariant 3's dedup key.
No foreign key: the remediator may keep these in a database of its own."""

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
)
"""Named leadership leases (the reconciler, later the policy runner): one holder at a time."""

automation = Table(
    "automation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("paused", Boolean, nullable=False),
    Column("reason", Text, nullable=True),
    Column("since", UtcDateTime, nullable=True),
    Column("by", String(255), nullable=True),
)
"""The global automation switch: one row (id 1); no row means automation runs."""

silences = Table(
    "silences",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("matchers", Json, nullable=False),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_silences_ends_at", "ends_at"),
)
"""Silences: matching violations are suppressed while ``starts_at <= now < ends_at``."""

policy_states = Table(
    "policy_states",
    metadata,
    Column("policy_name", String(255), primary_key=True),
    Column("target", String(255), primary_key=True),
    Column("phase", String(16), nullable=False),
    Column("episode", Integer, nullable=False),
    Column("since", UtcDateTime, nullable=True),
    Column("pending_since", UtcDateTime, nullable=True),
    Column("fired_at", UtcDateTime, nullable=True),
    Column("resolved_at", UtcDateTime, nullable=True),
    # The tags of the sample that fired it (an expression reads them while it is firing).
    Column("tags", Json, nullable=True),
    # The episode's latest action (its own or an escalation), and whether it acted at all.
    Column("action_id", BigId, nullable=True),
    Column("acted", Boolean, nullable=False, server_default=text("false")),
    # The episode's last decision row and its reason: the same suppression again only
    # counts on that row.
    Column("decision_id", BigId, nullable=True),
    Column("reason", String(64), nullable=True),
    Column("escalated_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_policy_states_phase", "phase"),
)
"""The state of each (policy, target): ok, pending, firing or resolved, with its episode."""

decisions = Table(
    "decisions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("last_at", UtcDateTime, nullable=False),
    Column("policy_name", String(255), nullable=False),
    Column("target", String(255), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("episode", Integer, nullable=False),
    Column("value", Float, nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("action_id", BigId, nullable=True),
    Column("count", Integer, nullable=False, server_default=text("1")),
    Index("ix_decisions_at", "at"),
    Index("ix_decisions_last_at", "last_at"),
    Index("ix_decisions_policy_name_at", "policy_name", "at"),
)
"""Every firing transition and every suppressed attempt to act, with its outcome."""

policy_guards = Table(
    "policy_guards",
    metadata,
    Column("policy_name", String(255), primary_key=True),
    Column("reset_at", UtcDateTime, nullable=True),
    Column("opened_at", UtcDateTime, nullable=True),
)
"""One row per policy with a breaker or blast radius: locked while they are checked and
counted, so replicas cannot race past them; ``reset_at`` closes the breaker early."""

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("event", String(64), nullable=False),
    Column("policy_name", String(255), nullable=True),
    Column("target", String(255), nullable=True),
    # No foreign key: a notification outlives what it tells about.
    Column("action_id", BigId, nullable=True),
    Column("reason", Text, nullable=False),
    Column("details", Json, nullable=True),
    # What routes match on besides the event, policy and target: the policy's severity, the
    # tags of what fired, and the violation episode (one page per episode).
    Column("severity", String(16), nullable=True),
    Column("tags", Json, nullable=True),
    Column("episode", Integer, nullable=True),
    # Delivery to the channels its routes name: pending → delivered | failed, or none when
    # no route sends it anywhere. While pending, next_attempt_at is when the next try is due
    # (a sender's claim pushes it ahead, a route's group_wait holds it back); attempts
    # counts tries, deliveries holds each channel's own state keyed by the channel's name
    # (never a URL, which may carry a token), with what the far side gave back to refer to
    # the message later (a Slack message's channel and ts).
    Column("delivery_status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("deliveries", Json, nullable=True),
    Index("ix_notifications_delivery_status_next_attempt_at", "delivery_status", "next_attempt_at"),
    Index("ix_notifications_at", "at"),
    Index("ix_notifications_action_id", "action_id"),
)
"""Notification events (breaker opened, action failed, ...), listed by the API and sent to
the channels the notification routes name."""

notification_marks = Table(
    "notification_marks",
    metadata,
    # "group:<route>:<channel>" or "repeat:<route>:<channel>:<digest of event, policy, target>"
    Column("key", String(255), primary_key=True),
    # A group: when its held events go out (null: none held) and when it last sent.
    # A repeat: when the (event, policy, target) last went to the channel.
    Column("due_at", UtcDateTime, nullable=True),
    Column("sent_at", UtcDateTime, nullable=True),
)
"""What the sender remembers between passes: route groups waiting to go out, and when each
event last went to a channel (for ``repeat_interval``)."""

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    # SHA-256 of the key (keys are long random strings: a fast hash is enough); the key
    # itself is shown once, when created, and never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)
"""API keys: a name, a role, the key's hash; revoked keys stay, for the audit trail."""

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("alertname", String(1024), nullable=False),
    # firing | resolved (as Alertmanager last said) | stale (firing, but no notification
    # refreshed it within VIGIL_ALERT_STALE_SECONDS: Vigil settled its episodes).
    Column("status", String(16), nullable=False),
    Column("ends_at", UtcDateTime, nullable=True),
    Column("labels", Json, nullable=False),
    Column("annotations", Json, nullable=False),
    Column("generator_url", Text, nullable=True),
    # From the labels as for a policy without target_label; None when no label names one.
    Column("target", String(255), nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    UniqueConstraint("fingerprint", "starts_at"),
    Index("ix_alerts_status_alertname", "status", "alertname"),
    Index("ix_alerts_last_seen_at", "last_seen_at"),
)
"""Alerts heard from Alertmanager, one row per alert episode (fingerprint, ``startsAt``):
a re-sent notification updates its row, never adds one. Pruned with the samples."""
