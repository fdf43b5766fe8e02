"""Per-table control state: active, paused or resyncing, with the reason, who set it and since when.

The state lives in the warehouse (``_replicator.table_control``), so it survives restarts and every task of
a deployment sees the same. A table without a row is active. The daemon reads the table at the start of each
round; the admin API and the CLI write it (the CLI directly when no daemon runs, or through the daemon's
admin API when the warehouse is an embedded DuckDB file that only one process may open).

States and what the daemon does with them:

- ``active``: captured, staged and merged.
- ``paused``: captured and staged (so a PostgreSQL slot keeps advancing), not merged; the backlog is merged
  in order on resume.
- ``resyncing``: ``resync_phase = 'requested'`` until the daemon has reset the table (staged batches
  dropped, source told to start over, target emptied, ledger rows removed), then ``'loading'`` until the
  fresh full load is merged and the source is not stopped on it; then ``active`` again.
- ``active`` with ``resync_phase = 'retry'`` or ``'skip'``: the operator's decision for a table its source
  stopped (``replicator.ops.stops``), waiting for the daemon's next round to hand it to the source; the
  daemon then clears the phase. Kept in this table so that it reaches whichever task holds the lease, and a
  daemon started later.

Statements are plain SQL that PostgreSQL, DuckDB and Redshift all accept (``text``, ``timestamptz``,
UPDATE-then-INSERT-WHERE-NOT-EXISTS instead of upserts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from replicator.model import TableId
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.warehouses import LEDGER, PROGRESS, STATE_SCHEMA

CONTROL = TableId(STATE_SCHEMA, "table_control")

State = Literal["active", "paused", "resyncing"]
ACTIVE: State = "active"
PAUSED: State = "paused"
RESYNCING: State = "resyncing"
REQUESTED, LOADING = "requested", "loading"
RETRY, SKIP = "retry", "skip"  # an operator's decision for a table its source stopped, until applied
ACTIONS = ("pause", "resume", "resync", RETRY, SKIP)


class SqlSession(Protocol):
    """A connection of its own to the warehouse, for the control and lease tables.

    ``transact`` runs the statements in one transaction and returns the rows of ``check`` (run last, inside
    the same transaction) or ``[]``. Implementations reconnect by themselves after a lost connection.
    """

    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def transact(self, statements: Sequence[str], check: str | None = None) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class PostgresSession:
    """A psycopg2 connection (PostgreSQL or Redshift-compatible), reopened when the server dropped it."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Any = None

    def _connection(self) -> Any:
        import psycopg2

        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self._dsn)
            self._conn.autocommit = True  # transactions are explicit, as in the warehouse
        return self._conn

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self._connection().cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def transact(self, statements: Sequence[str], check: str | None = None) -> list[tuple[Any, ...]]:
        conn = self._connection()
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                for s in statements:
                    cur.execute(s)
                rows: list[tuple[Any, ...]] = []
                if check is not None:
                    cur.execute(check)
                    rows = list(cur.fetchall())
                cur.execute("COMMIT")
                return rows
            except BaseException:
                with contextlib.suppress(Exception):
                    cur.execute("ROLLBACK")
                raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()


class DuckDBSession:
    """A DuckDB cursor: its own connection to the database the warehouse opened, for another thread."""

    def __init__(self, con: Any) -> None:
        self._con = con

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self._con.execute(sql).fetchall())

    def transact(self, statements: Sequence[str], check: str | None = None) -> list[tuple[Any, ...]]:
        self._con.begin()
        try:
            for s in statements:
                self._con.execute(s)
            rows = list(self._con.execute(check).fetchall()) if check is not None else []
            self._con.commit()
            return rows
        except BaseException:
            with contextlib.suppress(Exception):
                self._con.rollback()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._con.close()


@dataclass(frozen=True, slots=True)
class TableControl:
    table: str
    state: State
    reason: str
    changed_by: str
    since: str | None  # ISO 8601, UTC
    resync_phase: str | None

    @property
    def decision(self) -> str | None:
        """``retry`` or ``skip`` while an operator's decision waits for the daemon, else None."""
        return self.resync_phase if self.state == ACTIVE and self.resync_phase in (RETRY, SKIP) else None

    @property
    def merges(self) -> bool:
        """Whether the daemon merges this table's staged batches now."""
        return self.state == ACTIVE or (self.state == RESYNCING and self.resync_phase == LOADING)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_control(table: TableId) -> TableControl:
    return TableControl(str(table), ACTIVE, "", "", None, None)


_COLUMNS = ("table_schema", "table_name", "state", "reason", "changed_by", "since", "resync_phase")


def _key(table: TableId) -> str:
    return (
        f"{quote_ident('table_schema')} = {quote_literal(table.schema)}"
        f" AND {quote_ident('table_name')} = {quote_literal(table.name)}"
    )


class ControlStore:
    """Reads and writes ``_replicator.table_control`` through a ``SqlSession``."""

    def __init__(self, session: SqlSession) -> None:
        self.session = session

    def ensure(self) -> None:
        """Create the schema and table if missing (idempotent; a concurrent creator is tolerated)."""
        ddl = [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}",
            f"CREATE TABLE IF NOT EXISTS {quote_table(CONTROL)} ("
            '"table_schema" text NOT NULL, "table_name" text NOT NULL, "state" text NOT NULL,'
            ' "reason" text, "changed_by" text, "since" timestamptz NOT NULL, "resync_phase" text,'
            ' PRIMARY KEY ("table_schema", "table_name"))',
        ]
        try:
            self.session.transact(ddl)
        except Exception:
            # Two processes creating it at once: PostgreSQL lets one fail on its catalog's unique index.
            self.session.transact(ddl)

    def exists(self) -> bool:
        where = (
            f"table_schema = {quote_literal(CONTROL.schema)} AND table_name = {quote_literal(CONTROL.name)}"
        )
        return bool(self.session.query(f"SELECT 1 FROM information_schema.tables WHERE {where}"))

    def read_all(self) -> dict[TableId, TableControl]:
        """Every table with a row; tables without one are active."""
        cols = ", ".join(quote_ident(c) for c in _COLUMNS)
        out: dict[TableId, TableControl] = {}
        for schema, name, state, reason, by, since, phase in self.session.query(
            f"SELECT {cols} FROM {quote_table(CONTROL)}"
        ):
            table = TableId(schema, name)
            out[table] = TableControl(str(table), state, reason or "", by or "", _iso(since), phase or None)
        return out

    def get(self, table: TableId) -> TableControl:
        return self.read_all().get(table, default_control(table))

    def set(self, table: TableId, state: State, *, reason: str, who: str, phase: str | None = None) -> None:
        self.session.transact(self.set_statements(table, state, reason=reason, who=who, phase=phase))

    def set_statements(
        self, table: TableId, state: State, *, reason: str, who: str, phase: str | None = None
    ) -> list[str]:
        """UPDATE the row, else INSERT it; ``since`` is the warehouse's clock, so tasks agree on it."""
        values = {
            "state": quote_literal(state),
            "reason": quote_literal(reason),
            "changed_by": quote_literal(who),
            "since": "CURRENT_TIMESTAMP",
            "resync_phase": quote_literal(phase) if phase else "NULL",
        }
        sets = ", ".join(f"{quote_ident(k)} = {v}" for k, v in values.items())
        names = ", ".join(quote_ident(c) for c in _COLUMNS)
        row = ", ".join([quote_literal(table.schema), quote_literal(table.name), *values.values()])
        where = _key(table)
        return [
            f"UPDATE {quote_table(CONTROL)} SET {sets} WHERE {where}",
            f"INSERT INTO {quote_table(CONTROL)} ({names}) SELECT {row}"
            f" WHERE NOT EXISTS (SELECT 1 FROM {quote_table(CONTROL)} WHERE {where})",
        ]

    def request(self, action: str, table: TableId, *, reason: str, who: str) -> TableControl:
        """Apply an operator's ``pause``/``resume``/``resync``/``retry``/``skip`` and return the new state."""
        if action in (RETRY, SKIP):
            self.set(table, ACTIVE, reason=reason or f"{action} requested", who=who, phase=action)
        elif action == "pause":
            self.set(table, PAUSED, reason=reason, who=who)
        elif action == "resume":
            self.set(table, ACTIVE, reason=reason, who=who)
        elif action == "resync":
            self.set(table, RESYNCING, reason=reason, who=who, phase=REQUESTED)
        else:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        return self.get(table)

    def reset_target(self, table: TableId, *, who: str, reason: str = "full reload in progress") -> None:
        """Resync, warehouse side, in ONE transaction: empty the target, forget its ledger rows and progress
        (the reload's batches get the same ids as the first load's and must not be skipped), and move the
        control row to ``loading``. DELETE rather than TRUNCATE: TRUNCATE commits implicitly on Redshift."""
        where = _key(table)
        statements = [
            f"DELETE FROM {quote_table(table)}",
            f"DELETE FROM {quote_table(LEDGER)} WHERE {where}",
            f"DELETE FROM {quote_table(PROGRESS)} WHERE {where}",
            *self.set_statements(table, RESYNCING, reason=reason, who=who, phase=LOADING),
        ]
        self.session.transact(statements)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
