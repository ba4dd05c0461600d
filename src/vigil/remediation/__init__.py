"""Remediation: the remediations file, plugins, the remediator service and its client."""
