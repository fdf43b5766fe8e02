"""Durable storage: the object store (S3 or a local folder), the quarantine, and the crash points between
durable effects that the crash-safety tests use."""
