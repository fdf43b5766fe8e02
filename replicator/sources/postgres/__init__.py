"""The PostgreSQL source: logical replication (pgoutput) with an initial copy and per-table resync."""
