"""``python -m tests.fuzz.redshift_daemon run -c CONFIG``: the daemon with the Redshift warehouse's code path
on the PostgreSQL database of ``FUZZ_REDSHIFT_DSN``, through ``redshift_connector`` and the test shim
(``tests.helpers.redshift_shim``: COPY from S3 becomes a loader, a few type spellings change; the SQL is
Redshift's).

The config names that database as a ``postgres`` warehouse, which the daemon's lease and control tables
use; only the warehouse that merges is swapped. A child process of its own, so the fuzzer can SIGKILL it.
"""

from __future__ import annotations

import os
import sys

from replicator import app, cli
from replicator.config import Config
from replicator.warehouses import Warehouse
from tests.helpers.pg import dsn_params
from tests.helpers.redshift_shim import RedshiftShim, open_stand_in


def main() -> int:
    dsn = os.environ["FUZZ_REDSHIFT_DSN"]
    parts = dsn_params(dsn)
    shim = RedshiftShim(parts.get("host", "127.0.0.1"), int(parts.get("port", "5432")))

    def open_warehouse(cfg: Config, *, read_only: bool = False) -> Warehouse:
        return open_stand_in(shim, dsn)

    app.open_warehouse = open_warehouse
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
