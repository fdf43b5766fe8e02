"""DMS endpoint settings and file naming: which files are full load or CDC, and the order they are read in.

Every file gets a *file id* ``<phase>/<name>`` whose plain string order is the read order: phase ``1`` (full
load, ``LOAD`` + hex counter, possibly in parallel-load segment folders) before phase ``2`` (CDC, named by
time). ``name`` is the key below the table's folder, except that a date-partition folder
(``DatePartitionEnabled``) is rewritten to ``YYYY/MM/DD[/HH]``: with ``DatePartitionSequence=DDMMYYYY`` the
folder ``31/01/2024/`` must sort after ``01/02/2023/`` by time, not by name. For the default sequence and
delimiter the id is the name itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from replicator.model import Op, TableId

LOAD, CDC = "1", "2"

_SEQUENCES = {
    "YYYYMMDD": "YMD", "YYYYMMDDHH": "YMDH", "YYYYMM": "YM", "MMYYYYDD": "MYD", "DDMMYYYY": "DMY",
}  # fmt: skip
_DELIMITERS = {"SLASH": "/", "UNDERSCORE": "_", "DASH": "-", "NONE": ""}
_WIDTH = {"Y": 4, "M": 2, "D": 2, "H": 2}
_CANON = "YMDH"

Policy = Literal["stop", "quarantine"]


@dataclass(frozen=True, slots=True)
class DmsOptions:
    """How the DMS endpoint writes its files; field names follow the DMS S3 endpoint settings (snake case)."""

    data_format: Literal["csv", "parquet"] = "csv"
    compression_type: Literal["none", "gzip"] = "none"  # gzip CSV is recognised by its magic bytes too
    csv_delimiter: str = ","
    csv_row_delimiter: str = "\n"
    csv_null_value: str = "NULL"
    rfc_4180: bool = True
    add_column_name: bool = False  # a header row naming the columns starts every CSV file
    include_op_for_full_load: bool = False
    cdc_inserts_only: bool = False
    cdc_inserts_and_updates: bool = False
    timestamp_column_name: str | None = None  # None or "": no timestamp column
    use_csv_no_sup_value: bool = False
    csv_no_sup_value: str = ""
    date_partition_enabled: bool = False
    date_partition_sequence: str = "YYYYMMDD"
    date_partition_delimiter: str = "SLASH"
    preserve_transactions: bool = False
    cdc_path: str = ""  # where CDC_TXN-*.csv files go with preserve_transactions (below the bucket folder)
    # Not DMS settings. What bad input does to its table: stop it until an operator decides (the safe
    # default), or quarantine the row or file and go on; per-table overrides by "schema.table".
    bad_input_policy: Policy = "stop"
    table_policies: Mapping[TableId, Policy] = field(default_factory=dict)
    sqs_queue_url: str = ""  # S3 event notifications: a hint to look sooner, never the source of truth
    # How many consumed files per phase to remember for late-file detection (the listing window), and how
    # often to look for folders of tables we do not replicate.
    recent_files: int = 100
    discovery_interval_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.date_partition_sequence.upper() not in _SEQUENCES:
            raise ValueError(f"date_partition_sequence: expected one of {sorted(_SEQUENCES)}")
        if self.date_partition_delimiter.upper() not in _DELIMITERS:
            raise ValueError(f"date_partition_delimiter: expected one of {sorted(_DELIMITERS)}")
        if not self.csv_delimiter or not self.csv_row_delimiter:
            raise ValueError("csv_delimiter and csv_row_delimiter must not be empty")
        if self.preserve_transactions and not self.cdc_path:
            raise ValueError("preserve_transactions needs cdc_path (the folder of the CDC_TXN files)")

    def policy(self, table: TableId) -> Policy:
        return self.table_policies.get(table, self.bad_input_policy)

    def op_mode(self, phase: str) -> tuple[bool, Op]:
        """(does the row start with Op, the op of rows without one) for files of ``phase``."""
        if phase == LOAD:
            return self.include_op_for_full_load, Op.INSERT
        if self.cdc_inserts_only or self.cdc_inserts_and_updates:
            # DMS writes the Op column in these feeds only with IncludeOpForFullLoad. Without it the row
            # is an insert (inserts only) or an insert-or-update, which the merge's upsert applies alike.
            return self.include_op_for_full_load, Op.INSERT if self.cdc_inserts_only else Op.UPDATE
        return True, Op.INSERT


class Naming:
    """File ids for the names below a table's folder, and back (see the module docstring)."""

    def __init__(self, options: DmsOptions) -> None:
        self.dated = options.date_partition_enabled
        self.seq = _SEQUENCES[options.date_partition_sequence.upper()]
        self.delim = _DELIMITERS[options.date_partition_delimiter.upper()]
        # Listing can start after a remembered key only when key order is time order.
        self.key_order_is_time = not self.dated or (self.seq[0] == "Y" and self.delim in ("/", ""))
        if self.delim == "/":
            parts = [rf"(?P<{c}>\d{{{_WIDTH[c]}}})" for c in self.seq]
            self._folder = re.compile("^" + "/".join(parts) + "/")
        else:
            parts = [rf"(?P<{c}>\d{{{_WIDTH[c]}}})" for c in self.seq]
            self._folder = re.compile("^" + re.escape(self.delim).join(parts) + "/")

    def file_id(self, name: str) -> str:
        base = name.rsplit("/", 1)[-1]
        phase = LOAD if base.startswith("LOAD") else CDC
        if self.dated:
            m = self._folder.match(name)
            if m:
                canon = "/".join(m.group(c) for c in _CANON if c in self.seq)
                return f"{phase}/{canon}/{name[m.end() :]}"
        return f"{phase}/{name}"

    def name(self, file_id: str) -> str:
        """The key below the table folder of a file id made by ``file_id``."""
        rest = file_id[2:]
        if self.dated:
            parts = rest.split("/")
            n = len(self.seq)
            if len(parts) > n and all(p.isdigit() for p in parts[:n]):
                by = dict(zip((c for c in _CANON if c in self.seq), parts[:n], strict=True))
                folder = self.delim.join(by[c] for c in self.seq)
                return folder + "/" + "/".join(parts[n:])
        return rest


def is_parquet(key: str, options: DmsOptions) -> bool:
    return key.endswith(".parquet") or (
        options.data_format == "parquet" and not key.endswith((".csv", ".gz"))
    )
