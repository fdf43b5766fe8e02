"""Observability: Prometheus metrics and structured logging (imported from everywhere, so it imports nothing
of the package)."""
