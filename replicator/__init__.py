"""replicator: change-data-capture replication into warehouses, exactly once and in order."""

import os

__version__ = "0.1.0"

# Arrow's default allocator (mimalloc) keeps freed pages for reuse, so a worker that builds and drops large
# batches sits near its high-water mark. The system allocator hands them back. Arrow reads this variable
# when it first allocates, so it is set before anything here imports pyarrow; a value the operator set
# stays. Measured in tests/benchmarks/test_bench_pg_large_txn.py (see README, Measured speed).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
