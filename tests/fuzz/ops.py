"""The operations of a workload: small frozen dataclasses with a readable repr, each rendered as SQL.

Three layers: ``Stmt`` (one SQL statement on the source, or a savepoint block of them), ``Txn`` (statements
in one transaction, committed or rolled back) and daemon events (``Start``, ``Kill``, ``Crash``, ``Wait``).
A workload's ``steps`` mixes transactions and daemon events in execution order.

Columns name their type (``c3_numeric12`` is a ``numeric12`` column, see ``tests.fuzz.types``), so a
statement can be rendered and checked on its own, whatever was shrunk away around it. Keys are integers;
a table with a two-column key derives the second column from the first (``key_values``).
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.fuzz.type_table import BY_NAME
from tests.fuzz.types import FuzzType

KEY = "id"
KEY2 = "k"  # the second key column of tables with a composite key: text derived from the first
BIG = "big"  # the TOASTed text column


@dataclass(frozen=True)
class Big:
    """An incompressible random text of ``n`` characters (out of line in TOAST once compressed size stays
    above ~2 kB): generated from ``seed``, so its repr stays short and it is the same on every run."""

    seed: int
    n: int

    def text(self) -> str:
        rng = random.Random(self.seed)
        return "".join(rng.choices(string.ascii_letters + string.digits, k=self.n))

    def __repr__(self) -> str:
        return f"Big({self.seed}, {self.n})"


Value = str | None | Big


def column_type(name: str) -> FuzzType:
    """The type of column ``c<N>_<type>``."""
    return BY_NAME[name.split("_", 1)[1]]


# The partitions of a partitioned table (``TableDef.partition``): ranges of ``id`` (a key change to a fresh,
# larger key mostly moves its row to another partition) or lists of ``k`` (a composite key's second column,
# which follows ``id``), each with a DEFAULT partition.
RANGE_BOUNDS = (1000, 8000, 30000)
LIST_VALUES = (("k0",), ("k1",))


@dataclass(frozen=True)
class TableDef:
    """A source table: ``id`` bigint key (plus ``k`` text when ``composite``), typed columns, optionally the
    TOASTed ``big`` text column; ``identity_full``: REPLICA IDENTITY FULL; ``soft``: soft deletes;
    ``partition``: ``range`` (by ``id``) or ``list`` (by ``k``) makes it a partitioned table, replicated as
    the one table its schema file names (the publication publishes through the root)."""

    name: str
    columns: tuple[str, ...]
    big: bool = False
    composite: bool = False
    identity_full: bool = False
    soft: bool = False
    partition: str = ""

    def partitions(self) -> list[tuple[str, str]]:
        """(name, bounds) of each partition (empty when not partitioned)."""
        if self.partition == "range":
            lows = ("MINVALUE", *map(str, RANGE_BOUNDS))
            highs = (*map(str, RANGE_BOUNDS), "MAXVALUE")
            bounds = [f"FROM ({a}) TO ({b})" for a, b in zip(lows, highs, strict=True)][:-1]
        elif self.partition == "list":
            bounds = [f"IN ({', '.join(repr(v) for v in vs)})" for vs in LIST_VALUES]
        else:
            return []
        out = [(f"{self.name}_p{i}", f"FOR VALUES {b}") for i, b in enumerate(bounds)]
        return [*out, (f"{self.name}_pd", "DEFAULT")]

    def ddl(self) -> list[str]:
        cols = [f"{KEY} bigint NOT NULL"]
        if self.composite:
            cols.append(f"{KEY2} text NOT NULL")
        cols += [f"{c} {column_type(c).ddl}" for c in self.columns]
        if self.big:
            cols.append(f"{BIG} text")
        key = f"{KEY}, {KEY2}" if self.composite else KEY
        by = {"range": f" PARTITION BY RANGE ({KEY})", "list": f" PARTITION BY LIST ({KEY2})"}
        head = f"CREATE TABLE {self.name} ({', '.join(cols)}, PRIMARY KEY ({key}))"
        out = [head + by.get(self.partition, "")]
        out += [f"CREATE TABLE {p} PARTITION OF {self.name} {bounds}" for p, bounds in self.partitions()]
        if self.identity_full:  # not inherited: each partition's own identity decides what its changes carry
            tables = [self.name, *(p for p, _ in self.partitions())]
            out += [f"ALTER TABLE {t} REPLICA IDENTITY FULL" for t in tables]
        return out

    def schema_file(self, target: str) -> str:
        key = f'["{KEY}", "{KEY2}"]' if self.composite else f'["{KEY}"]'
        lines = ['schema = "public"', f'name = "{self.name}"', f"primary_key = {key}"]
        if self.soft:
            lines.append('deletes = "soft"')
        lines += ["[columns]", f'{KEY} = "bigint not null"']
        if self.composite:
            lines.append(f'{KEY2} = "text not null"')
        lines += [f'{c} = "{column_type(c).schema_type(target)}"' for c in self.columns]
        if self.big:
            lines.append(f'{BIG} = "text"')
        return "\n".join(lines) + "\n"


def key_values(composite: bool, key: int) -> list[tuple[str, Any]]:
    return [(KEY, key), (KEY2, f"k{key % 3}")] if composite else [(KEY, key)]


def _param(v: Value) -> Any:
    return v.text() if isinstance(v, Big) else v


def _fmt(values: Sequence[tuple[str, Value]]) -> str:
    return ", ".join(f"{c}={v!r}" for c, v in values)


Sql = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Insert:
    table: str
    composite: bool
    key: int
    values: tuple[tuple[str, Value], ...]

    def sql(self) -> list[Sql]:
        pairs = [*key_values(self.composite, self.key), *((c, _param(v)) for c, v in self.values)]
        cols = ", ".join(c for c, _ in pairs)
        marks = ", ".join("%s" for _ in pairs)
        return [(f"INSERT INTO {self.table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                 tuple(v for _, v in pairs))]  # fmt: skip

    def __repr__(self) -> str:
        return f"Insert({self.table}, {self.key}, {_fmt(self.values)})"


def _where(composite: bool, key: int) -> tuple[str, tuple[Any, ...]]:
    pairs = key_values(composite, key)
    return " AND ".join(f"{c} = %s" for c, _ in pairs), tuple(v for _, v in pairs)


@dataclass(frozen=True)
class Update:
    """Sets some columns of one row; ``new_key`` also moves the row to another key (a key change)."""

    table: str
    composite: bool
    key: int
    values: tuple[tuple[str, Value], ...]
    new_key: int | None = None

    def sql(self) -> list[Sql]:
        pairs = [(c, _param(v)) for c, v in self.values]
        if self.new_key is not None:
            pairs = [*key_values(self.composite, self.new_key), *pairs]
        where, args = _where(self.composite, self.key)
        # Nothing to set (a table whose columns were all dropped): an UPDATE that changes nothing, still sent.
        sets = ", ".join(f"{c} = %s" for c, _ in pairs) or f"{KEY} = {KEY}"
        return [(f"UPDATE {self.table} SET {sets} WHERE {where}", (*(v for _, v in pairs), *args))]

    def __repr__(self) -> str:
        move = f" -> {self.new_key}" if self.new_key is not None else ""
        return f"Update({self.table}, {self.key}{move}, {_fmt(self.values)})"


@dataclass(frozen=True)
class Delete:
    table: str
    composite: bool
    key: int

    def sql(self) -> list[Sql]:
        where, args = _where(self.composite, self.key)
        return [(f"DELETE FROM {self.table} WHERE {where}", args)]

    def __repr__(self) -> str:
        return f"Delete({self.table}, {self.key})"


@dataclass(frozen=True)
class Truncate:
    table: str

    def sql(self) -> list[Sql]:
        return [(f"TRUNCATE {self.table}", ())]


@dataclass(frozen=True)
class AddColumn:
    """``ADD COLUMN``, with ``DEFAULT`` a constant (PostgreSQL input text: the existing rows hold it without
    a rewrite, and no row is sent) and ``NOT NULL``."""

    table: str
    column: str
    default: str | None = None
    not_null: bool = False

    def sql(self) -> list[Sql]:
        ddl = f"ALTER TABLE {self.table} ADD COLUMN {self.column} {column_type(self.column).ddl}"
        args: tuple[Any, ...] = ()
        if self.default is not None:
            ddl, args = f"{ddl} DEFAULT %s", (self.default,)
        if self.not_null:
            ddl += " NOT NULL"
        return [(ddl, args)]

    def __repr__(self) -> str:
        default = f" DEFAULT {self.default!r}" if self.default is not None else ""
        return f"AddColumn({self.table}, {self.column}{default}{' NOT NULL' if self.not_null else ''})"


@dataclass(frozen=True)
class AlterType:
    """``ALTER COLUMN ... TYPE`` to the type named ``to`` (``tests.fuzz.type_table``): a widening, or with
    ``attempt`` a narrowing, tried in a savepoint and left undone when a value does not fit (the executor
    counts it apart, not as a failure)."""

    table: str
    column: str
    to: str
    attempt: bool = False

    def sql(self) -> list[Sql]:
        return [(f"ALTER TABLE {self.table} ALTER COLUMN {self.column} TYPE {BY_NAME[self.to].ddl}", ())]

    def __repr__(self) -> str:
        kind = "Narrow" if self.attempt else "Widen"
        return f"{kind}({self.table}, {self.column} -> {self.to})"


@dataclass(frozen=True)
class DropColumn:
    table: str
    column: str

    def sql(self) -> list[Sql]:
        return [(f"ALTER TABLE {self.table} DROP COLUMN {self.column}", ())]


def _pct(sql: str) -> str:
    """``sql`` inside a statement with parameters: psycopg2 reads ``%`` as a placeholder."""
    return sql.replace("%", "%%")


def _bulk_columns(columns: Sequence[str], *, big: bool) -> list[tuple[str, str]]:
    """(column, SQL expression of ``g``) for the typed columns present now, and ``big`` if asked."""
    out = [(c, _pct(column_type(c).bulk)) for c in columns if "_" in c and c.split("_", 1)[1] in BY_NAME]
    if big:
        # ~10 kB of md5 hex per row: stored out of line even after compression.
        out.append((BIG, "(SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 320) i)"))
    return out


@dataclass(frozen=True)
class BulkInsert:
    """``count`` rows from key ``first`` on, built by the server (the columns present when it runs)."""

    table: str
    composite: bool
    first: int
    count: int
    big: bool = False

    def sql(self) -> list[Sql]:  # columns are filled in by the executor, which knows the live shape
        raise NotImplementedError

    def sql_for(self, columns: Sequence[str]) -> list[Sql]:
        cols = _bulk_columns(columns, big=self.big)
        keys = [(KEY, "g")] + ([(KEY2, "'k' || (g %% 3)")] if self.composite else [])
        names = ", ".join(c for c, _ in [*keys, *cols])
        exprs = ", ".join(e for _, e in [*keys, *cols])
        last = self.first + self.count - 1
        return [(f"INSERT INTO {self.table} ({names}) SELECT {exprs} FROM generate_series(%s::bigint, %s) g "
                 "ON CONFLICT DO NOTHING", (self.first, last))]  # fmt: skip


@dataclass(frozen=True)
class BulkUpdate:
    """Rows with keys in ``lo..hi``: sets ``column`` from its bulk expression, or with ``shift`` moves every
    key by that much (a key change of many rows, leaving the other columns, the TOASTed one too, alone)."""

    table: str
    composite: bool
    lo: int
    hi: int
    column: str | None = None
    shift: int = 0

    def sql(self) -> list[Sql]:
        sets = []
        if self.shift:
            sets.append(f"{KEY} = {KEY} + {self.shift}")
            if self.composite:
                sets.append(f"{KEY2} = 'k' || (({KEY} + {self.shift}) %% 3)")
        if self.column is not None:
            # The bulk expression reads ``g``: a correlated subquery names the row's key so.
            expr = _pct(column_type(self.column).bulk)
            sets.append(f"{self.column} = (SELECT {expr} FROM (SELECT {self.table}.{KEY} + 1 AS g) s)")
        if not sets:
            return []
        return [
            (f"UPDATE {self.table} SET {', '.join(sets)} WHERE {KEY} BETWEEN %s AND %s", (self.lo, self.hi))
        ]


@dataclass(frozen=True)
class BulkDelete:
    table: str
    lo: int
    hi: int

    def sql(self) -> list[Sql]:
        return [(f"DELETE FROM {self.table} WHERE {KEY} BETWEEN %s AND %s", (self.lo, self.hi))]


@dataclass(frozen=True)
class Savepoint:
    """Statements after a SAVEPOINT, then ROLLBACK TO it (``rollback``) or RELEASE it."""

    stmts: tuple[Stmt, ...]
    rollback: bool

    def __repr__(self) -> str:
        end = "rollback" if self.rollback else "release"
        return f"Savepoint[{end}]({', '.join(map(repr, self.stmts))})"


Stmt = (
    Insert
    | Update
    | Delete
    | Truncate
    | AddColumn
    | AlterType
    | DropColumn
    | BulkInsert
    | BulkUpdate
    | BulkDelete
    | Savepoint
)


@dataclass(frozen=True)
class Txn:
    stmts: tuple[Stmt, ...]
    rollback: bool = False

    def __repr__(self) -> str:
        inner = "\n    ".join(map(repr, self.stmts))
        return f"Txn{'[rollback]' if self.rollback else ''}(\n    {inner})"

    def rows(self) -> int:
        """Roughly how many rows this transaction writes (for the operation count)."""
        return sum(_rows(s) for s in self.stmts)


def _rows(s: Stmt) -> int:
    if isinstance(s, BulkInsert):
        return s.count
    if isinstance(s, BulkUpdate | BulkDelete):
        return s.hi - s.lo + 1
    if isinstance(s, Savepoint):
        return sum(_rows(x) for x in s.stmts)
    return 1


@dataclass(frozen=True)
class Start:
    """Start the daemon and wait for its slot: what was written before is the initial copy's, what follows
    streams."""


@dataclass(frozen=True)
class Kill:
    """``after`` seconds once the daemon is at work (its admin API answers), SIGKILL it and start it again:
    killing a process that is still importing would test nothing."""

    after: float = 0.0


@dataclass(frozen=True)
class Crash:
    """Restart the daemon with ``REPLICATOR_CRASH_AT=point`` (``name@n``: the n-th time it gets there): it
    kills itself there (``replicator.storage.faults``) and is started again, normally, before the next
    step."""

    point: str


@dataclass(frozen=True)
class Wait:
    seconds: float


Step = Txn | Start | Kill | Crash | Wait


@dataclass(frozen=True)
class Workload:
    seed: int
    tables: tuple[TableDef, ...]
    steps: tuple[Step, ...]

    def describe(self) -> str:
        lines = [f"seed {self.seed}: {len(self.steps)} steps"]
        lines += [f"  {t!r}" for t in self.tables]
        lines += [f"  {s!r}" for s in self.steps]
        return "\n".join(lines)

    def operations(self) -> int:
        """Statements and daemon events (a bulk statement counts once)."""
        return sum(_count(s) for s in self.steps)


def _count(s: Step | Stmt) -> int:
    if isinstance(s, Txn | Savepoint):
        return sum(_count(x) for x in s.stmts)
    return 1
