"""Observability: Prometheus metrics (all of them, in ``metrics``) and structured logging (``logging``).
Imported from everywhere, so it imports nothing of the package.

Exports the two modules: ``metrics`` and ``logging``.
"""

from replicator.obs import logging, metrics

__all__ = ["logging", "metrics"]
