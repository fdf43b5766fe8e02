"""Scenario -> files, as the DMS S3 target writes them: schema files and config for the replicator, and
each feed operation's file (CSV per RFC 4180, gzip, Parquet, CDC_TXN), named in operation order."""

from __future__ import annotations

import gzip
import io
import json
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.fuzz_dms.feed import TS_COLUMN, CdcFile, Layout, LoadFile, Row, Scenario, TableSpec, TxnFile
from tests.fuzz_dms.values import KINDS

SCHEMA = "dbo"
TXN_PATH = "cdc"
_T0 = datetime(2024, 3, 1)


def schema_files(sc: Scenario, folder: Path) -> None:
    folder.mkdir(parents=True)
    for t in sc.tables:
        lines = [
            f"schema = {json.dumps(SCHEMA)}",
            f"name = {json.dumps(t.name)}",
            f"primary_key = {json.dumps([c.name for c in t.columns if c.key])}",
            "[columns]",
            *(f"{json.dumps(c.name)} = {json.dumps(_declared(c.kind, key=c.key))}" for c in t.columns),
        ]
        (folder / f"{t.name}.toml").write_text("\n".join(lines) + "\n")


def _declared(kind: str, *, key: bool) -> str:
    return kind + " not null" if key else kind


def config(sc: Scenario, work: Path, *, max_rows: int) -> Path:
    lay = sc.layout
    dms = {
        "timestamp_column_name": TS_COLUMN if lay.timestamp else "",
        "csv_null_value": lay.null,
        "add_column_name": lay.header,
        "data_format": "parquet" if lay.parquet else "csv",
        "compression_type": "gzip" if lay.gzip else "none",
        "csv_delimiter": lay.delimiter,
        "include_op_for_full_load": lay.op_for_full_load,
        "preserve_transactions": lay.txn,
        "cdc_path": TXN_PATH if lay.txn else "",
        "bad_input_policy": "quarantine",
    }
    text = f"""schemas = {json.dumps(str(work / "schemas"))}
[source]
path = {json.dumps(str(work / "feed"))}
[source.dms]
{chr(10).join(f"{k} = {json.dumps(v)}" for k, v in dms.items())}
[staging]
path = {json.dumps(str(work / "staging"))}
[warehouse]
kind = "duckdb"
path = {json.dumps(str(work / "warehouse.duckdb"))}
[batch]
max_rows = {max_rows}
max_age_seconds = 0.2
[pipeline]
poll_interval_seconds = 0.1
[log]
level = "info"
format = "json"
"""
    path = work / "replicator.toml"
    path.write_text(text)
    return path


class Writer:
    """Writes the files of feed operations into ``feed``; names rise with the operation index."""

    def __init__(self, sc: Scenario, feed: Path) -> None:
        self.sc, self.feed = sc, feed
        self.tables = {t.name: t for t in sc.tables}
        self.loads: dict[str, int] = {}

    def write(self, index: int, op: LoadFile | CdcFile | TxnFile) -> Path:
        lay = self.sc.layout
        ext = ".parquet" if lay.parquet else ".csv.gz" if lay.gzip else ".csv"
        stamp = (_T0 + timedelta(minutes=index)).strftime("%Y%m%d-%H%M%S") + "0000"
        if isinstance(op, TxnFile):
            rel = f"{TXN_PATH}/CDC_TXN-{stamp}-{index:05d}.csv"
            data = b"".join(self._txn_line(table, row) for table, row in op.rows)
        else:
            t = self.tables[op.table]
            if isinstance(op, LoadFile):
                self.loads[op.table] = n = self.loads.get(op.table, 0) + 1
                name, has_op = f"LOAD{n:08X}{ext}", lay.op_for_full_load
            else:
                name, has_op = f"{stamp}{ext}", True
            rel = f"{SCHEMA}/{t.name}/{name}"
            data = self._parquet(t, op.rows, has_op) if lay.parquet else self._csv(t, op.rows, has_op)
        path = self.feed / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".tmp-" + path.name)  # readers skip names starting with "."
        tmp.write_bytes(data)
        tmp.replace(path)
        return path

    # -- CSV ---------------------------------------------------------------------------------------------

    def _field(self, value: str | None) -> bytes:
        lay = self.sc.layout
        if value is None:
            return lay.null.encode()
        special = any(ch in value for ch in (lay.delimiter, '"', "\n", "\r"))
        if special or value == lay.null or (value == "" and lay.null == ""):
            return ('"' + value.replace('"', '""') + '"').encode()
        return value.encode()

    def _line(self, head: list[str], row: Row) -> bytes:
        delim = self.sc.layout.delimiter.encode()
        fields = [self._field(v) for v in head] + [self._field(v) for v in row.values]
        if row.raw is not None:
            fields[-1] = row.raw
        return delim.join(fields) + b"\n"

    def _csv(self, t: TableSpec, rows: tuple[Row, ...], has_op: bool) -> bytes:
        lay = self.sc.layout
        out = []
        if lay.header:
            names = [*(["Op"] if has_op else []), *([TS_COLUMN] if lay.timestamp else [])]
            names += [c.name for c in t.columns]
            out.append(lay.delimiter.encode().join(self._field(n) for n in names) + b"\n")
        for row in rows:
            out.append(self._line([*([row.op] if has_op else []), *([row.ts] if lay.timestamp else [])], row))
        data = b"".join(out)
        return gzip.compress(data, mtime=0) if lay.gzip else data

    def _txn_line(self, table: str, row: Row) -> bytes:
        stamp = [row.ts] if self.sc.layout.timestamp else []
        return self._line([row.op, table, SCHEMA, *stamp], row)

    # -- Parquet -----------------------------------------------------------------------------------------

    def _parquet(self, t: TableSpec, rows: tuple[Row, ...], has_op: bool) -> bytes:
        arrays: dict[str, pa.Array] = {}
        if has_op:
            arrays["Op"] = pa.array([r.op for r in rows], pa.string())
        if self.sc.layout.timestamp:
            arrays[TS_COLUMN] = pa.array([r.ts for r in rows], pa.string())
        for i, c in enumerate(t.columns):
            kind = KINDS[c.kind]
            values = [_typed(kind.parquet, kind.parse, r.values[i]) for r in rows]
            arrays[c.name] = pa.array(values, _ARROW[kind.parquet])
        sink = io.BytesIO()
        pq.write_table(pa.table(arrays), sink)
        return sink.getvalue()


_ARROW = {
    "int64": pa.int64(),
    "decimal": pa.decimal128(38, 10),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "bool": pa.bool_(),
    "string": pa.string(),
}


def _typed(arrow: str, parse: Any, text: str | None) -> Any:
    if text is None:
        return None
    value = parse(text)
    if arrow == "decimal":
        with localcontext() as ctx:
            ctx.prec = 60  # 38 digits do not fit the default context's 28
            return Decimal(value).quantize(Decimal("1e-10"))
    return value


def layout_of(lay: Layout) -> dict[str, Any]:
    """For messages: the settings that differ from the defaults."""
    return {k: getattr(lay, k) for k in Layout.__slots__ if getattr(lay, k) != getattr(Layout(), k)}
