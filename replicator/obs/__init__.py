"""Observability: Prometheus metrics (all of them, in ``metrics``), structured logging (``logging``) and
progress on a terminal (``progress``). Imported from everywhere, so it imports nothing of the package.

Exports the three modules: ``metrics``, ``logging`` and ``progress``.
"""

from replicator.obs import logging, metrics, progress

__all__ = ["logging", "metrics", "progress"]
