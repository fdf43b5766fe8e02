"""An independent reference reader for a folder of AWS DMS S3 CSV files: the expected final state per table.

Written from DMS's documented layout alone, with nothing but the csv module (it shares no code with the
replicator). For every table folder ``<schema>/<table>/``: apply the LOAD files in counter order (every row
is an insert), then the CDC files in name order (first field Op: I/U upsert the image, D deletes the key).
Files whose name starts with ``.`` (in-progress writes) are ignored.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

Key = tuple[str, ...]
Row = list[str | None]


def table_files(table_dir: Path) -> list[Path]:
    """LOAD files first (hex counter, fixed width, so name order), then CDC files in name (= time) order."""
    names = sorted(p.name for p in table_dir.glob("*.csv") if not p.name.startswith("."))
    loads = [n for n in names if n.startswith("LOAD")]
    return [table_dir / n for n in loads + [n for n in names if n not in loads]]


def records(
    table_dir: Path, *, timestamp: bool = True, header: bool = False
) -> Iterator[tuple[Path, str, str | None, Row]]:
    """(file, op, commit timestamp, values) for every row of one table, in apply order. NULL -> None."""
    for path in table_files(table_dir):
        is_cdc = not path.name.startswith("LOAD")
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        for fields in rows[1:] if header else rows:
            op = fields.pop(0) if is_cdc else "I"
            ts = fields.pop(0) if timestamp else None
            yield path, op, ts, [None if v == "NULL" else v for v in fields]


def final_state(
    folder: Path,
    key_positions: Mapping[str, Sequence[int]],
    *,
    schema: str = "dbo",
    timestamp: bool = True,
    header: bool = False,
) -> dict[str, dict[Key, Row]]:
    """table -> {primary key values -> row values} after applying every file of every table in order.

    ``key_positions`` gives, per table, the positions of its primary-key columns among its data columns.
    """
    state: dict[str, dict[Key, Row]] = {}
    for table, positions in key_positions.items():
        rows = state.setdefault(table, {})
        for path, op, _ts, values in records(folder / schema / table, timestamp=timestamp, header=header):
            key = tuple(str(values[i]) for i in positions)
            if op in ("I", "U"):
                rows[key] = values
            elif op == "D":
                rows.pop(key, None)
            else:
                raise ValueError(f"{path}: unknown Op {op!r}")
    return state
