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

# -- operations (issue 7): control, lease, source lag, views, admin API ----------------------------------
REFRESH_SECONDS = Histogram("replicator_refresh_duration_seconds", "Time to refresh one view", ["view"])
# Set by the view refresh (issue 6), like LAG_SECONDS for tables; the deploy dashboard and alerts read it.
VIEW_STALENESS_SECONDS = Gauge(
    "replicator_view_staleness_seconds",
    "Source commit time of the newest change a view reflects, to the end of its last refresh", ["view"],
)  # fmt: skip
SOURCE_LAG_SECONDS = Gauge(
    "replicator_source_lag_seconds",
    "Age of the oldest source change not yet staged (DMS: the oldest unconsumed file)", ["table"],
)  # fmt: skip
SOURCE_LAG_BYTES = Gauge(
    "replicator_source_lag_bytes", "Source WAL not yet confirmed (PostgreSQL: slot lag)", ["slot"]
)
# PostgreSQL source (issue 4): commit at the source to the end of staging, for the last fully staged txn.
SOURCE_COMMIT_TO_STAGED_SECONDS = Gauge(
    "replicator_source_commit_to_staged_seconds",
    "Source commit time to durably staged, for the last transaction fully staged", ["slot"],
)  # fmt: skip
# PostgreSQL source: standby status updates the stream's thread sent while the pipeline was not reading.
SOURCE_STATUS_UPDATES = Counter(
    "replicator_source_status_updates_total",
    "Standby status updates sent between reads (keeps the walsender from timing out during merges)", ["slot"],
)  # fmt: skip
TABLE_FAILING = Gauge(
    "replicator_table_failing",
    "1 while a table's merge fails (retried each round; the reason is in status)",
    ["table"],
)
TABLE_STOPPED = Gauge(
    "replicator_table_stopped",
    "1 while a table waits for an operator: stopped by its source (bad input, a type it cannot hold, a"
    " position cleaned up) or by a failing merge (reason merge_failed); see replicator status",
    ["table", "reason"],
)
PAUSED_TABLES = Gauge("replicator_paused_tables", "Tables whose merge is paused (or waiting for a resync)")
TABLE_STATE = Gauge("replicator_table_state", "1 for the control state each table is in", ["table", "state"])
LEASE_HELD = Gauge("replicator_lease_held", "1 while this process holds the single-writer lease", ["scope"])
# Scale-out (lease.mode = shared; replicator/ops/shares.py). Every series of the process also carries the task
# through TASK_INFO (join on instance in queries); the unit gauges are what the alert rules read.
TASK_INFO = Info("replicator_task", "This task's member id among the tasks sharing one config")
UNITS_OWNED = Gauge("replicator_units_owned", "Units of work (table groups or shards) this task owns now")
UNITS_CONFIGURED = Gauge("replicator_units_configured", "Units of work of the config, as this task sees it")
UNITS_UNOWNED = Gauge(
    "replicator_units_unowned", "Units of work with no live owner now, as this task sees the claims"
)
ROUNDS = Counter("replicator_rounds_total", "Completed capture-and-merge rounds of the daemon loop")
ADMIN_REQUESTS = Counter(
    "replicator_admin_requests_total", "Admin API requests by action and outcome", ["action", "result"]
)
# Views (issue 6): staleness and duration are VIEW_STALENESS_SECONDS and REFRESH_SECONDS above.
VIEW_REFRESHES = Counter(
    "replicator_view_refreshes_total",
    "View refreshes by mode (incremental, recompute, full, concurrent; on Redshift what Redshift did)",
    ["view", "mode"],
)  # fmt: skip
