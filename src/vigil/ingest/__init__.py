"""Ingest: wire schemas, the group-commit pipeline, metric storage, routes."""
