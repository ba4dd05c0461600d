"""Remediation plugins, one module each, registered under the ``vigil.plugins`` entry point."""
