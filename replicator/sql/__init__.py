"""SQL builders. Nothing here opens a connection."""
