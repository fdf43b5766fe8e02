"""Initial copy of tables under a snapshot exported by the replication slot.

Each table is read with ``COPY (SELECT ... WHERE ctid range) TO STDOUT`` one range of pages at a time, so
memory stays bounded by the chunk whatever the table's size, and every value arrives as the type's text
output: the same wire text pgoutput sends later, so snapshot rows and streamed rows are staged alike.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator, Sequence

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from replicator.model import TableId
from replicator.sql.ident import quote_ident, quote_table

_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))")
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape_match(m: re.Match[str]) -> str:
    octal, hexa, char = m.groups()
    if octal is not None:
        return chr(int(octal, 8))
    if hexa is not None:
        return chr(int(hexa, 16))
    return _SIMPLE.get(char, char)


def parse_copy_text(data: str) -> Iterator[tuple[str | None, ...]]:
    """Rows of PostgreSQL's COPY text format (tab-separated, ``\\N`` for NULL, backslash escapes)."""
    for line in data.split("\n"):
        if not line:
            continue
        if "\\" not in line:
            yield tuple(line.split("\t"))
            continue
        yield tuple(
            None if f == "\\N" else (_ESCAPE.sub(_unescape_match, f) if "\\" in f else f)
            for f in line.split("\t")
        )


class SnapshotReader:
    """Reads tables as of an exported snapshot, over one ordinary connection held for the whole copy."""

    def __init__(self, dsn: str, snapshot: str, *, pages_per_chunk: int = 2048) -> None:
        self.conn = psycopg2.connect(dsn)
        self.pages_per_chunk = pages_per_chunk
        with self.conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))

    def rows(self, table: TableId, columns: Sequence[str]) -> Iterator[list[tuple[str | None, ...]]]:
        """The table's rows as of the snapshot, in chunks of whole page ranges."""
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
                buf = io.StringIO()
                cur.copy_expert(
                    f"COPY (SELECT {cols} FROM {quote_table(table)} WHERE {where}) TO STDOUT", buf
                )
                chunk = list(parse_copy_text(buf.getvalue()))
                if chunk:
                    yield chunk
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
