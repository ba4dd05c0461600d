"""Alertmanager's alerts: the webhook's wire format, matching alerts to ``alert`` policies,
their store, and the shells that turn them into the decision core's observations."""
