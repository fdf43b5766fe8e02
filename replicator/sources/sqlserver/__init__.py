"""The SQL Server source: change tables (CDC) read by LSN range. The driver (pymssql) is the caller's: the
source takes a function that connects.

Exports: ``SqlServerSource``, ``SqlServerOptions``, and its errors ``SqlServerSourceError`` and
``NeedsResync`` (the change table no longer holds what the table needs next).
``open_source`` (``wiring``) opens it from ``[source.sqlserver]``, for the composition root.
"""

from replicator.sources.sqlserver.source import (
    NeedsResync,
    SqlServerOptions,
    SqlServerSource,
    SqlServerSourceError,
)
from replicator.sources.sqlserver.wiring import open_source

__all__ = ["NeedsResync", "SqlServerOptions", "SqlServerSource", "SqlServerSourceError", "open_source"]
