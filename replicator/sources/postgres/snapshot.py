"""Reading tables under a snapshot exported by a replication slot (the initial copy and table re-copies).

Each table is read with one ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``, handed on in chunks of about
``chunk_bytes`` of CSV as it arrives: memory stays bounded by the chunk whatever the table's size, its rows'
(TOASTed values included), or the server version (no ctid range scans, which need PostgreSQL 14). Every value
arrives as the type's text output: the same wire text pgoutput sends later, so snapshot rows and streamed
rows are staged alike. The CSV is parsed by Arrow's reader (C++, off the GIL) into string columns: an unquoted
empty field is NULL, a quoted one (``""``) the empty string, exactly as COPY writes them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Container, Iterator, Sequence

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pyarrow as pa
import pyarrow.csv as pacsv

from replicator.model import TableId
from replicator.sql import quote_ident, quote_table


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


class _Chunker:
    """COPY's output sink: the server sends one row per message and psycopg2 writes each as it comes, so
    cutting between two writes always cuts between rows."""

    def __init__(self, names: Sequence[str], emit: Callable[[pa.Table], None], chunk_bytes: int) -> None:
        self.names, self.emit, self.chunk_bytes = names, emit, chunk_bytes
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, row: bytes) -> None:
        self.parts.append(row)
        self.size += len(row)
        if self.size >= self.chunk_bytes:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            data, self.parts, self.size = b"".join(self.parts), [], 0
            self.emit(parse_copy_csv(data, self.names))


class SnapshotReader:
    """Reads tables as of an exported snapshot, over one ordinary connection held for the whole copy.

    Several readers may import the same snapshot (one per worker thread): they all see the same data."""

    def __init__(self, dsn: str, snapshot: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.set_client_encoding("UTF8")
        with self.conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))

    def columns(self, table: TableId) -> list[tuple[str, int, int]]:
        """The table's columns as of the snapshot: (name, type OID, type modifier), in table order."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s::regclass"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (quote_table(table),),
            )
            return [(str(n), int(o), int(m)) for n, o, m in cur.fetchall()]

    def estimate(self, table: TableId) -> int | None:
        """The catalog's estimate of the table's rows (``pg_class.reltuples``, as of its last VACUUM or
        ANALYZE); None when the table was never analyzed (-1 from PostgreSQL 14, 0 before)."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", (quote_table(table),)
            )
            row = cur.fetchone()
        return int(row[0]) if row is not None and row[0] is not None and row[0] > 0 else None

    def copy(
        self,
        table: TableId,
        columns: Sequence[str],
        emit: Callable[[pa.Table], None],
        *,
        chunk_bytes: int = 4 << 20,
        missing: Container[str] = (),
    ) -> None:
        """Hand the table's rows as of the snapshot to ``emit`` (string columns ``columns``), in chunks of
        about ``chunk_bytes`` of CSV, in table order. ``missing`` columns (no longer at the source) come as
        NULL. ``emit`` may block (back pressure: the server waits) or raise (the copy stops; close the
        reader then)."""
        cols = ", ".join(
            f"NULL::text AS {quote_ident(c)}" if c in missing else quote_ident(c) for c in columns
        )
        sink = _Chunker(columns, emit, chunk_bytes)
        with self.conn.cursor() as cur:
            cur.copy_expert(f"COPY (SELECT {cols} FROM {quote_table(table)}) TO STDOUT (FORMAT csv)", sink)
        sink.flush()

    def close(self) -> None:
        # After a copy stopped half-way the connection may be unusable: closing is what matters.
        with contextlib.suppress(psycopg2.Error):
            self.conn.rollback()
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
