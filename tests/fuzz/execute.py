"""The executor: runs a workload's transactions on the source PostgreSQL, one connection, in order.

A statement that fails (possible once shrinking removed what made it valid, e.g. the delete that freed a
key) rolls its transaction back: the comparison is between source and target, so a transaction that did
not happen is as good a test as one that did. Failures are counted and reported, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg2

from tests.fuzz.ops import AlterType, BulkInsert, Savepoint, Stmt, Txn


@dataclass
class Counts:
    transactions: int = 0
    rolled_back: int = 0  # by the workload (Txn.rollback)
    failed: int = 0  # a statement raised: rolled back
    statements: int = 0
    rows: int = 0
    largest: int = 0  # rows of the largest committed transaction (above 10,000: more than one capture chunk)
    narrowings: int = 0  # narrowings tried (AlterType.attempt)
    narrowings_refused: int = 0  # of which a value did not fit: undone, as the workload allows
    errors: list[str] = field(default_factory=list)


class SourceWriter:
    """One connection to the source; ``run(txn)`` executes one transaction and says whether it committed."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.counts = Counts()
        self._savepoints = 0

    def close(self) -> None:
        self.conn.close()

    def run(self, txn: Txn) -> bool:
        c = self.counts
        c.transactions += 1
        try:
            with self.conn.cursor() as cur:
                for s in txn.stmts:
                    self._stmt(cur, s)
            if txn.rollback:
                self.conn.rollback()
                c.rolled_back += 1
                return False
            self.conn.commit()
            c.rows += txn.rows()
            c.largest = max(c.largest, txn.rows())
            return True
        except psycopg2.Error as exc:
            self.conn.rollback()
            c.failed += 1
            if len(c.errors) < 20:
                c.errors.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
            return False

    def _stmt(self, cur: Any, s: Stmt) -> None:
        self.counts.statements += 1
        if isinstance(s, Savepoint):
            self._savepoints += 1
            name = f"sp{self._savepoints}"
            cur.execute(f"SAVEPOINT {name}")
            for x in s.stmts:
                self._stmt(cur, x)
            cur.execute(f"ROLLBACK TO SAVEPOINT {name}" if s.rollback else f"RELEASE SAVEPOINT {name}")
            return
        if isinstance(s, AlterType) and s.attempt:
            self._savepoints += 1
            name = f"sp{self._savepoints}"
            self.counts.narrowings += 1
            cur.execute(f"SAVEPOINT {name}")
            try:
                for sql, args in s.sql():
                    cur.execute(sql, args)
            except psycopg2.Error:
                cur.execute(f"ROLLBACK TO SAVEPOINT {name}")  # a value does not fit the narrower type
                self.counts.narrowings_refused += 1
            return
        # A bulk insert fills the columns the table has now (added and dropped ones included).
        statements = s.sql_for(live_columns(cur, s.table)) if isinstance(s, BulkInsert) else s.sql()
        for sql, args in statements:
            cur.execute(sql, args)


def live_columns(cur: Any, table: str) -> list[str]:
    """The columns ``table`` has now, in order (dropped ones left out)."""
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        (table,),
    )
    return [r[0] for r in cur.fetchall()]
