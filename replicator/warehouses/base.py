"""The contract every warehouse implements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from replicator.model import Manifest, Position, TableId, TableSchema

STATE_SCHEMA = "_replicator"  # the replicator's own tables live here, in the warehouse
STAGING_PREFIX = "_stg_"  # staging tables are named _stg_<batch id>; leftovers are dropped at start-up


@dataclass(frozen=True, slots=True)
class ApplyResult:
    batch_id: str
    applied: bool  # False: the ledger already had this batch, nothing was changed
    inserted: int = 0  # keys whose final change was an insert or update (rows upserted)
    deleted: int = 0  # keys whose final change was a delete
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class TableState:
    """What the ledger says about one table."""

    table: TableId
    applied_through: Position | None
    batches: int
    rows: int  # changes applied (sum of batch rows)
    last_commit_time: datetime | None
    last_applied_at: datetime | None


class Warehouse(Protocol):
    """Applies staged batches exactly once, in order.

    Contract:
    - ``setup`` creates the ``_replicator`` schema and its tables if missing and drops leftover staging
      tables of a previous run. It is idempotent.
    - ``ensure_table`` creates the target table from the schema if it is missing.
    - ``apply`` runs in ONE transaction: if the ledger holds ``manifest.batch_id`` it changes nothing and
      returns ``applied=False``; otherwise it loads the Parquet file into a staging table, reduces it to the
      last change per primary key (by ``_seq``), deletes and upserts the target, and writes the ledger row.
      A crash anywhere inside leaves the target as it was before. Calling it twice is harmless.
    """

    name: str

    def setup(self) -> None: ...

    def ensure_table(self, schema: TableSchema) -> None: ...

    def apply(self, manifest: Manifest, schema: TableSchema, parquet: Path) -> ApplyResult: ...

    def table_states(self) -> dict[TableId, TableState]: ...

    def close(self) -> None: ...
