"""replicator: change-data-capture replication into warehouses, exactly once and in order."""

__version__ = "0.1.0"
