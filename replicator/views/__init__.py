"""Views: definitions and dependency order, refresh scheduling, incremental maintenance, and their SQL per
warehouse."""
