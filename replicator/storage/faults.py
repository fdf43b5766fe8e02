"""Crash points for the crash-safety tests.

``REPLICATOR_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches the named point, the way a
lost ECS task or an OOM kill would end it: no cleanup, no flush, no ``finally``. ``<name>@<n>`` kills at the
n-th time the point is reached (1 is the first), so a test can also crash after some batches went through.
Unset in production, the check is one dict lookup.

The points sit between every two durable effects of a batch, in the order they happen (see
``replicator.pipeline``): staged Parquet, staged manifest, source acknowledgement, merge + ledger commit,
manifest removal, Parquet removal.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_POINTS = frozenset(
    {
        "mid_stage",  # Parquet written to staging, manifest not yet: the batch does not exist yet
        "after_stage",  # batch durable in staging, source not yet told
        "after_ack",  # source told the batch is staged, nothing merged
        "mid_merge",  # target rows changed inside the merge transaction, not committed
        "after_merge",  # merge + ledger committed, nothing else recorded (staged file not yet removed)
        "mid_remove",  # applied batch's manifest removed, its Parquet file not yet
    }
)

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    wanted = os.environ.get("REPLICATOR_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
