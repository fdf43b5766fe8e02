"""Every Prometheus metric the replicator exports, in one place, named ``replicator_<noun>_<unit>``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

BUILD = Info("replicator_build", "Version of the running replicator")

CHANGES_CAPTURED = Counter(
    "replicator_changes_captured_total", "Changes read from the source", ["table", "op"]
)
CHANGES_STAGED = Counter("replicator_changes_staged_total", "Changes durably staged", ["table", "op"])
CHANGES_MERGED = Counter(
    "replicator_changes_merged_total", "Changes in batches applied to the warehouse", ["table", "op"]
)
BATCHES_STAGED = Counter("replicator_batches_staged_total", "Batches written to staging", ["table"])
BATCHES_MERGED = Counter(
    "replicator_batches_merged_total", "Batches applied (or skipped as already applied)", ["table", "result"]
)
BATCH_ROWS = Histogram(
    "replicator_batch_rows", "Changes per staged batch", ["table"],
    buckets=(1, 10, 100, 1_000, 10_000, 100_000, 1_000_000),
)  # fmt: skip
BATCH_BYTES = Histogram(
    "replicator_batch_bytes", "Parquet bytes per staged batch", ["table"],
    buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9),
)  # fmt: skip
STAGE_SECONDS = Histogram(
    "replicator_stage_duration_seconds", "Time to write one batch to staging", ["table"]
)
MERGE_SECONDS = Histogram("replicator_merge_duration_seconds", "Time to apply one batch", ["table"])
LAG_SECONDS = Gauge(
    "replicator_lag_seconds", "Source commit time to applied in the warehouse, for the last applied batch",
    ["table"],
)  # fmt: skip
BACKLOG_BATCHES = Gauge("replicator_backlog_batches", "Staged batches not yet applied", ["table"])
QUARANTINED = Counter(
    "replicator_quarantined_total", "Files or rows set aside as unreadable, by reason", ["table", "reason"]
)
ERRORS = Counter("replicator_errors_total", "Errors by pipeline stage and kind", ["stage", "kind"])
