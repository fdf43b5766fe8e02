"""Durable storage: the object store (S3 or a local folder) that holds staged batches, source progress and
the quarantine, and the crash points between durable effects that the crash-safety tests use.

Exports: ``ObjectStore`` (the protocol), ``LocalStore``, ``S3Store``, ``S3Settings``, ``open_store`` (by URL);
``key_problem`` and ``OutsideRoot`` (object names that are paths, links out of a local store: refused);
``Quarantine`` (rows and files that could not be read, kept with the reason); ``crash_point``.
"""

from replicator.storage.faults import crash_point
from replicator.storage.quarantine import Quarantine
from replicator.storage.store import (
    LocalStore,
    ObjectStore,
    OutsideRoot,
    S3Settings,
    S3Store,
    key_problem,
    open_store,
)

__all__ = [
    "LocalStore",
    "ObjectStore",
    "OutsideRoot",
    "Quarantine",
    "S3Settings",
    "S3Store",
    "crash_point",
    "key_problem",
    "open_store",
]
