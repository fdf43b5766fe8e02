"""Reading tables under a snapshot exported by a replication slot (the initial copy and table re-copies).

Each table is read with ``COPY (SELECT ... WHERE ctid range) TO STDOUT (FORMAT csv)`` one range of pages at
a time, so memory stays bounded by the range whatever the table's size, and every value arrives as the
type's text output: the same wire text pgoutput sends later, so snapshot rows and streamed rows are staged
alike. The CSV is parsed by Arrow's reader (C++, off the GIL) into string columns: an unquoted empty field
is NULL, a quoted one (``""``) the empty string, exactly as COPY writes them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pyarrow as pa
import pyarrow.csv as pacsv

from replicator.model import TableId
from replicator.sql.ident import quote_ident, quote_table


def parse_copy_csv(data: bytes, names: Sequence[str]) -> pa.Table:
    """COPY's CSV output as a table of string columns named ``names`` (null for SQL NULL)."""
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=list(names), block_size=1 << 24),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),  # text values may hold line breaks
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


class SnapshotReader:
    """Reads tables as of an exported snapshot, over one ordinary connection held for the whole copy.

    Several readers may import the same snapshot (one per worker thread): they all see the same data."""

    def __init__(self, dsn: str, snapshot: str, *, pages_per_chunk: int = 1024) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.set_client_encoding("UTF8")
        self.pages_per_chunk = pages_per_chunk
        with self.conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))

    def chunks(self, table: TableId, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The table's rows as of the snapshot (string columns ``columns``), one page range per chunk."""
        cols = ", ".join(quote_ident(c) for c in columns)
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                (quote_table(table),),
            )
            row = cur.fetchone()
            pages = int(row[0]) if row else 0
            start = 0
            while True:
                end = start + self.pages_per_chunk
                # The last range is open-ended: pages added since the size was read hold no row the
                # snapshot sees, but an open end costs nothing and is obviously complete.
                where = f"ctid >= '({start},0)'::tid" + (
                    f" AND ctid < '({end},0)'::tid" if end < pages else ""
                )
                buf = io.BytesIO()
                cur.copy_expert(
                    f"COPY (SELECT {cols} FROM {quote_table(table)} WHERE {where}) TO STDOUT (FORMAT csv)",
                    buf,
                )
                data = buf.getvalue()
                if data:
                    yield parse_copy_csv(data, columns)
                if end >= pages:
                    return
                start = end

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


@contextlib.contextmanager
def temporary_snapshot(dsn: str, slot: str) -> Iterator[tuple[int, str]]:
    """A snapshot exported by a new temporary logical slot: ``(consistent point, snapshot name)``.

    For copying one table again while the main slot keeps streaming: a transaction is in the snapshot
    exactly when its commit record is before the consistent point, so the main slot's changes committed
    before it are in the copy and those committed at or after it are not. The slot exists, and the snapshot
    stays valid, until the block ends (the connection closes and the server drops the temporary slot).
    """
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE_REPLICATION_SLOT {quote_ident(slot)} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT")
        row = cur.fetchone()
        assert row is not None
        _name, consistent_point, snapshot, _plugin = row
        hi, _, lo = str(consistent_point).partition("/")
        yield (int(hi, 16) << 32) | int(lo, 16), str(snapshot)
    finally:
        conn.close()
