"""The SQL Server source: change tables (CDC) read by LSN range."""
