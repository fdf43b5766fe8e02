"""Operations: what each command-line command does (``commands``), the daemon's loop (``daemon``: lease,
control table of pause/resume/resync, HTTP server for health, metrics and the admin API), status, and
scale-out (``shares``: the tasks of one config share its tables under fenced claims).

Exports: the ``commands`` and ``status`` modules, ``check`` (``replicator check``), ``Daemon``, ``ObsServer``,
``ControlStore`` and its table ``CONTROL``.
"""

from replicator.ops import commands, status
from replicator.ops.check import check
from replicator.ops.control import CONTROL, ControlStore
from replicator.ops.daemon import Daemon
from replicator.ops.http import ObsServer

__all__ = ["CONTROL", "ControlStore", "Daemon", "ObsServer", "check", "commands", "status"]
