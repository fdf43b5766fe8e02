"""The PostgreSQL source: logical replication (pgoutput) with an initial copy and per-table resync.
Importing it imports psycopg2.

Exports: ``PostgresSource``; ``source_stops`` (the tables a source stopped, read from its state without a
connection, for ``replicator status``); ``parse_lsn`` and ``lsn_text`` (LSNs as PostgreSQL writes them).
``open_source`` (``wiring``) opens it from ``[source.postgres]``, for the composition root, and
``postgres_source_dsn`` is its connection string (holds the password: for a driver only); ``check_source``
checks what start-up needs, creating nothing (``replicator check``).
"""

from replicator.sources.postgres.pgoutput import lsn_text, parse_lsn
from replicator.sources.postgres.resync import source_stops
from replicator.sources.postgres.source import PostgresSource
from replicator.sources.postgres.wiring import check_source, open_source, postgres_source_dsn

__all__ = [
    "PostgresSource",
    "check_source",
    "lsn_text",
    "open_source",
    "parse_lsn",
    "postgres_source_dsn",
    "source_stops",
]
