"""Crash points for the crash-safety tests.

``REPLICATOR_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches the named point, the way a
lost ECS task or an OOM kill would end it: no cleanup, no flush, no ``finally``. Unset in production, the
check is one dict lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_POINTS = frozenset(
    {
        "after_stage",  # batch durable in staging, source not yet told
        "mid_merge",  # target rows changed inside the merge transaction, not committed
        "after_merge",  # merge + ledger committed, nothing else recorded (staged file not yet removed)
    }
)


def crash_point(name: str) -> None:
    if os.environ.get("REPLICATOR_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
