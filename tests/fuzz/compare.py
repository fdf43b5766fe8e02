"""The comparator: every table of the source against the target, row by row, in canonical form.

Each column is read as text on both sides (``FuzzType.read_expr``) and brought to its canonical form
(``FuzzType.canon``): numbers by value (NaN and the infinities by name), instants in UTC, JSON as values,
text exactly. Rows are matched by key. The columns compared are those the source table has now; a column
dropped at the source may stay in the target (documented in ``replicator/warehouses/evolution.py``).
Soft-delete tables compare their rows not marked ``_deleted``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import psycopg2

from tests.fuzz.execute import live_columns
from tests.fuzz.ops import BIG, KEY, KEY2, TableDef, column_type
from tests.fuzz.replica import MARKER
from tests.fuzz.type_table import BY_NAME, PG_SPELLING, WIDER
from tests.fuzz.types import FuzzType

Rows = dict[tuple[Any, ...], tuple[Any, ...]]


Kinds = dict[str, str]  # column -> the type it has now at the source, where it was changed (AlterType)


def _type_of(column: str, kinds: Kinds) -> FuzzType:
    return BY_NAME[kinds[column]] if column in kinds else column_type(column)


def _canon_of(column: str, kinds: Kinds) -> Callable[[str], Any]:
    if column in (KEY, "n"):
        return int
    if column in (KEY2, BIG):
        return str
    return _type_of(column, kinds).canon


def _expr(engine: str, column: str, kinds: Kinds) -> str:
    quoted = f'"{column}"'
    if column in (KEY, KEY2, BIG, "n"):
        return f"CAST({quoted} AS VARCHAR)" if engine == "duckdb" else f"{quoted}::text"
    return _type_of(column, kinds).read_expr(engine, quoted)


def _rows(raw: Sequence[tuple[Any, ...]], columns: Sequence[str], nkey: int, kinds: Kinds) -> Rows:
    canon = [_canon_of(c, kinds) for c in columns]
    out: Rows = {}
    for r in raw:
        values = tuple(None if v is None else f(v) for f, v in zip(canon, r, strict=True))
        out[values[:nkey]] = values[nkey:]
    return out


def _select(
    engine: str,
    table: str,
    columns: Sequence[str],
    *,
    soft: bool,
    absent: set[str],
    kinds: Kinds,
    unless: dict[str, str] | None = None,
) -> str:
    where = ' WHERE "_deleted" IS NOT TRUE' if soft else ""
    unless = unless or {}

    def expr(c: str) -> str:
        if c in absent:
            return "NULL"
        if c in unless:  # NULL where it holds its DEFAULT
            same = f'"{c}" IS NOT DISTINCT FROM ({unless[c]})'
            return f"CASE WHEN {same} THEN NULL ELSE {_expr(engine, c, kinds)} END"
        return _expr(engine, c, kinds)

    exprs = ", ".join(expr(c) for c in columns)
    return f"SELECT {exprs} FROM public.{table}{where}"


def _show(v: Any) -> str:
    text = repr(v)
    if len(text) > 80:
        return f"<{len(text)} chars, md5 {hashlib.md5(text.encode()).hexdigest()[:8]}, {text[:40]}...>"
    return text


def diff_rows(
    table: str, columns: Sequence[str], nkey: int, want: Rows, got: Rows, limit: int = 8
) -> list[str]:
    """Readable differences: keys missing from the target, keys only in the target, values that differ."""
    out = []
    missing = sorted(set(want) - set(got), key=repr)
    extra = sorted(set(got) - set(want), key=repr)
    if missing:
        out.append(f"{table}: {len(missing)} rows missing from the target, e.g. keys {missing[:limit]}")
    if extra:
        out.append(f"{table}: {len(extra)} rows in the target only, e.g. keys {extra[:limit]}")
    differ = [k for k in sorted(set(want) & set(got), key=repr) if want[k] != got[k]]
    names = columns[nkey:]
    for k in differ[:limit]:
        cols = [
            f"{n}: source {_show(a)} target {_show(b)}"
            for n, a, b in zip(names, want[k], got[k], strict=True)
            if a != b
        ]
        out.append(f"{table} key {k}: " + "; ".join(cols))
    if len(differ) > limit:
        out.append(f"{table}: {len(differ)} rows differ in all")
    return out


def _wider_closure(name: str) -> list[str]:
    out, todo = [], list(WIDER.get(name, ()))
    while todo:
        w = todo.pop(0)
        if w not in out:
            out.append(w)
            todo += WIDER.get(w, ())
    return out


class Reader:
    """Reads the canonical rows of a table from the source (PostgreSQL) or a target."""

    def __init__(self, engine: str, address: str) -> None:
        self.engine = engine
        if engine == "duckdb":
            self.duck = duckdb.connect(address, read_only=True)
            with contextlib.suppress(duckdb.Error):  # without ICU, timestamptz prints in UTC anyway
                self.duck.execute("SET TimeZone = 'UTC'")
        else:
            self.pg = psycopg2.connect(address)
            self.pg.autocommit = True
            with self.pg.cursor() as cur:
                cur.execute("SET TimeZone = 'UTC'")

    def columns(self, table: str) -> list[str]:
        if self.engine == "duckdb":
            rows = self.duck.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = ? ORDER BY ordinal_position", [table]
            ).fetchall()  # fmt: skip
            return [r[0] for r in rows]
        with self.pg.cursor() as cur:
            if self.engine == "source":
                return live_columns(cur, table)
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = %s ORDER BY ordinal_position", (table,)
            )  # fmt: skip
            return [r[0] for r in cur.fetchall()]

    def defaults(self, table: str) -> dict[str, str]:
        """The DEFAULT expression of each column of the source table that has one."""
        with self.pg.cursor() as cur:
            cur.execute(
                "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_attrdef d"
                " ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attrelid = %s::regclass"
                " AND NOT a.attisdropped", (table,)
            )  # fmt: skip
            return dict(cur.fetchall())

    def kinds(self, table: str) -> Kinds:
        """The source's columns whose type was changed (``AlterType``): the type name they have now."""
        with self.pg.cursor() as cur:
            cur.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
                " %s::regclass AND attnum > 0 AND NOT attisdropped", (table,)
            )  # fmt: skip
            now = dict(cur.fetchall())
        out = {}
        for column, spelled in now.items():
            if column in (KEY, KEY2, BIG) or "_" not in column or column.split("_", 1)[1] not in BY_NAME:
                continue
            base = column_type(column).name
            changed = [w for w in _wider_closure(base) if PG_SPELLING.get(w) == spelled]
            if changed:
                out[column] = changed[0]
        return out

    def rows(
        self,
        table: str,
        columns: Sequence[str],
        nkey: int,
        *,
        soft: bool = False,
        absent: set[str] | None = None,
        kinds: Kinds | None = None,
        unless: dict[str, str] | None = None,
    ) -> Rows:
        """Canonical rows by key; ``absent`` columns (not in this table) read as NULL, and so do ``unless``
        columns where they hold the SQL expression given for them."""
        engine = "duckdb" if self.engine == "duckdb" else "pg"
        kinds = kinds or {}
        sql = _select(engine, table, columns, soft=soft, absent=absent or set(), kinds=kinds, unless=unless)
        if self.engine == "duckdb":
            raw = self.duck.execute(sql).fetchall()
        else:
            with self.pg.cursor() as cur:
                cur.execute(sql)
                raw = cur.fetchall()
        return _rows(raw, columns, nkey, kinds)

    def close(self) -> None:
        (self.duck if self.engine == "duckdb" else self.pg).close()


def compare(source: str, target: str, address: str, tables: Sequence[TableDef]) -> list[str]:
    """Every difference between the source tables (and the marker) and the target; empty when equal."""
    src, dst = Reader("source", source), Reader(target, address)
    problems: list[str] = []
    try:
        for t in [*tables, TableDef(MARKER, ())]:
            soft = t.soft
            columns = src.columns(t.name)
            nkey = 2 if t.composite else 1
            have = set(dst.columns(t.name))
            if not have:
                problems.append(f"{t.name}: no such table in the target")
                continue
            # A column added at the source reaches the target with the first row change after it (DDL is
            # not replicated): until then the target lacks it, which is only wrong where it holds a value.
            kinds, absent = src.kinds(t.name), set(columns) - have
            # A column added with a DEFAULT and no row change since: the target has not heard of it yet
            # (README "Architecture": it comes with the first row change after it), while the source's
            # rows hold the default. Only a value other than the default is missing from the target then.
            unless = {c: e for c, e in src.defaults(t.name).items() if c in absent}
            want = src.rows(t.name, columns, nkey, kinds=kinds, unless=unless)
            got = dst.rows(t.name, columns, nkey, soft=soft, absent=absent, kinds=kinds)
            problems += diff_rows(t.name, columns, nkey, want, got)
    finally:
        src.close()
        dst.close()
    return problems
