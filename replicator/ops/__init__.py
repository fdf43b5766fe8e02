"""Operations: what each command-line command does (``commands``), the daemon's loop (``daemon``: lease,
control table of pause/resume/resync, HTTP server for health, metrics and the admin API), and status.

Exports: the ``commands`` and ``status`` modules, ``Daemon``, ``ObsServer``.
"""

from replicator.ops import commands, status
from replicator.ops.daemon import Daemon
from replicator.ops.http import ObsServer

__all__ = ["Daemon", "ObsServer", "commands", "status"]
