"""Prometheus metrics and logging. Registries are injected, never global."""
