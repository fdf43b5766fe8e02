"""The PostgreSQL source: logical replication (pgoutput) with an initial copy and per-table resync.
Importing it imports psycopg2.

Exports: ``PostgresSource``; ``source_stops`` (the tables a source stopped, read from its state without a
connection, for ``replicator status``); ``parse_lsn`` and ``lsn_text`` (LSNs as PostgreSQL writes them).
"""

from replicator.sources.postgres.pgoutput import lsn_text, parse_lsn
from replicator.sources.postgres.resync import source_stops
from replicator.sources.postgres.source import PostgresSource

__all__ = ["PostgresSource", "lsn_text", "parse_lsn", "source_stops"]
