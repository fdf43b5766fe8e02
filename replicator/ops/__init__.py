"""Operations: the daemon's loop, the control table (pause, resume, resync), the lease, the HTTP server,
status, and what each command-line command does."""
