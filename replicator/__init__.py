"""replicator: change-data-capture replication into warehouses, exactly once and in order."""

import ctypes
import os
import sys

__version__ = "0.1.0"

# Arrow's default allocator (mimalloc) keeps freed pages for reuse, so a worker that builds and drops large
# batches sits near its high-water mark. The system allocator hands them back. Arrow reads this variable
# when it first allocates, so it is set before anything here imports pyarrow; a value the operator set
# stays. Measured in tests/benchmarks/test_bench_pg_large_txn.py (see README, Measured speed).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

# glibc serves blocks above a threshold with their own mmap, handed back to the system when freed, but it
# raises that threshold to the size of every such block freed (up to 32 MB): after the first 1 MB value is
# freed, values of 300 kB-1 MB come from the heap, whose free holes stay resident. Fixing the threshold (as
# MALLOC_MMAP_THRESHOLD_ would; a value the operator set stays) took the peak RSS of 300 kB-1 MB values
# streamed into PostgreSQL from 827-904 MB to 603-634 MB; at 512 kB, batches of small rows (Arrow buffers
# are 0.1-2 MB) measured no slower, at 128 kB 4-8% slower (DMS end to end, alternating runs).
MMAP_THRESHOLD = 512 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def _fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` (Linux glibc only). Returns whether it did."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


MMAP_THRESHOLD_FIXED = _fix_mmap_threshold()
