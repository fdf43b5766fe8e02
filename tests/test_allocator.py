"""glibc's mmap threshold is fixed when the package is imported (issue 13, point 8): blocks of large values
are then handed back to the system when freed, instead of leaving holes in the heap that stay resident."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Frees one 4 MB block (which raises glibc's dynamic threshold to 4 MB), then allocates 200 blocks of
# 600 kB and a small one after them, frees the 200 and prints how many MB the resident set fell by.
PROBE = """
import os, sys
if sys.argv[1] == "import":
    import replicator
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
big = bytearray(4 << 20)
del big
blocks = [bytearray(600 << 10) for _ in range(200)]
after = bytearray(4096)  # above them in the heap: the heap cannot shrink from its top
before = rss()
del blocks
print(round(before - rss()))
"""


def _fell_by(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_large_values_are_handed_back_once_the_package_is_imported() -> None:
    import replicator

    assert replicator.MMAP_THRESHOLD_FIXED
    assert _fell_by("import") >= 100  # ~117 MB handed back
    assert _fell_by("control") < 20  # without the package's setting they stay resident (the control)
