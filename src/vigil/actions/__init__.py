"""Remediation actions: statuses and their graph, the store (history + audit), routes."""
