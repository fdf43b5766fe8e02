"""A fake SQL Server with change data capture, behind a DB-API connection like pymssql's.

No SQL Server runs on these machines, so the SQL Server source is tested against this. It keeps the documented
semantics of the CDC functions, not canned answers:

- LSNs are binary(10) (10-byte big-endian numbers); a committed transaction gets the next LSN, its rows share
  it as ``__$start_lsn`` and get increasing ``__$seqval``; an update is an old image (op 3) and a new image
  (op 4) with the same seqval; deletes (op 1) carry the old image, inserts (op 2) the new one.
- ``cdc.lsn_time_mapping`` maps each LSN to its commit time (``sys.fn_cdc_map_lsn_to_time``);
  ``sys.fn_cdc_get_max_lsn`` is its largest LSN; ``sys.fn_cdc_increment_lsn`` adds one.
- cleanup removes change rows below a low water mark and moves ``sys.fn_cdc_get_min_lsn`` there; asking
  ``fn_cdc_get_all_changes_`` / ``fn_cdc_get_net_changes_`` for a range outside [min LSN, max LSN] fails
  with error 313, as SQL Server does.

Parameters are rendered into the text the way pymssql does it (``bytes`` -> ``0x..``, ``str`` -> ``N'..'``),
then a small dispatch on the statement's shape answers it from the fake's state. A statement of any other
shape raises, so a builder change that the fake does not understand fails the tests instead of passing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

ZERO = bytes(10)


class FakeMssqlError(Exception):
    """Like pymssql's errors: ``args == (number, message)``."""


def lsn(n: int) -> bytes:
    return n.to_bytes(10, "big")


def quote(value: Any) -> str:
    """A parameter as pymssql renders it into the statement."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, datetime):
        return "'" + value.isoformat(sep=" ") + "'"
    return "N'" + str(value).replace("'", "''") + "'"


@dataclass
class Column:
    name: str
    data_type: str = "int"
    char_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    nullable: bool = True


@dataclass
class Table:
    schema: str
    name: str
    columns: list[Column]
    pk: list[str]
    rows: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in self.pk)


@dataclass
class Instance:
    name: str
    table: Table
    captured: list[str]
    start_lsn: int
    supports_net: bool = True
    changes: list[tuple[int, int, int, tuple[Any, ...]]] = field(default_factory=list)  # lsn, seq, op, values


class FakeServer:
    def __init__(self, database: str = "sales") -> None:
        self.database = database
        self.cdc_enabled = True
        self.job: bool | None = True  # None: no capture job; False: not running
        self.tables: dict[tuple[str, str], Table] = {}
        self.instances: dict[str, Instance] = {}
        self.lsn_time: dict[int, datetime] = {}
        self.next_lsn = 100
        self.next_seq = 1
        self.statements: list[str] = []
        self.fail_next: Exception | None = None

    # -- setting up and changing data ---------------------------------------------------------------------

    def create_table(self, schema: str, name: str, columns: list[Column], pk: list[str]) -> Table:
        t = Table(schema, name, columns, pk)
        self.tables[(schema, name)] = t
        return t

    def enable_cdc(
        self, schema: str, name: str, instance: str | None = None, *, net: bool = True
    ) -> Instance:
        t = self.tables[(schema, name)]
        ci = instance or f"{schema}_{name}"
        self.next_lsn += 1  # enabling takes an LSN of its own
        inst = Instance(ci, t, [c.name for c in t.columns], self.next_lsn, net)
        self.instances[ci] = inst
        return inst

    @contextmanager
    def transaction(self, when: datetime | None = None) -> Iterator[Tx]:
        tx = Tx(self)
        yield tx
        self.next_lsn += 1
        commit = self.next_lsn
        self.lsn_time[commit] = when or datetime(2024, 1, 1) + timedelta(seconds=commit)
        for table, op, values in tx.log:
            seq = self.next_seq
            self.next_seq += 1
            for inst in self.instances.values():
                if inst.table is table:
                    for o, v in [(3, values[0]), (4, values[1])] if op == 34 else [(op, values)]:
                        inst.changes.append((commit, seq, o, tuple(v[c] for c in inst.captured)))

    def cleanup(self, instance: str, low: int) -> None:
        """The cleanup job: drop change rows below ``low``; the instance's min LSN becomes ``low``."""
        inst = self.instances[instance]
        inst.changes = [c for c in inst.changes if c[0] >= low]
        inst.start_lsn = max(inst.start_lsn, low)

    def connect(self) -> FakeConnection:
        return FakeConnection(self)

    # -- answering statements -----------------------------------------------------------------------------

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        for pattern, handler in _DISPATCH:
            m = re.fullmatch(pattern, sql, re.S)
            if m:
                return handler(self, m)
        raise FakeMssqlError(102, f"fake SQL Server does not understand: {sql}")

    def max_lsn(self) -> int:
        return max(self.lsn_time, default=0)

    def _instance(self, name: str, fn: str) -> Instance:
        inst = self.instances.get(name)
        if inst is None:
            raise FakeMssqlError(208, f"Invalid object name 'cdc.{fn}{name}'")
        return inst

    def _range(self, inst: Instance, lo: int, hi: int, fn: str) -> None:
        if lo < inst.start_lsn or hi > self.max_lsn() or lo > hi:
            raise FakeMssqlError(
                313,
                f"An insufficient number of arguments were supplied for the procedure or function "
                f"cdc.{fn}{inst.name}",
            )

    def _project(self, inst: Instance, cols: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
        names = _names(cols)
        for n in names:
            if n not in inst.captured:
                raise FakeMssqlError(207, f"Invalid column name '{n}'")
        return tuple(values[inst.captured.index(n)] for n in names)

    def all_changes(self, m: re.Match[str]) -> list[tuple[Any, ...]]:
        limit, cols, name, lo, hi, option, after_lsn, after_seq = m.groups()
        inst = self._instance(name, "fn_cdc_get_all_changes_")
        lo_n, hi_n = _num(lo), _num(hi)
        self._range(inst, lo_n, hi_n, "fn_cdc_get_all_changes_")
        out = []
        for c_lsn, seq, op, values in sorted(inst.changes, key=lambda c: c[:3]):
            if not lo_n <= c_lsn <= hi_n or (op == 3 and option == "all"):
                continue
            if c_lsn > _num(after_lsn) or seq >= _num(after_seq):
                t = self.lsn_time[c_lsn]
                out.append((lsn(c_lsn), lsn(seq), op, t, *self._project(inst, cols, values)))
        return out[: int(limit)]

    def net_changes(self, m: re.Match[str]) -> list[tuple[Any, ...]]:
        cols, name, lo, hi, order, offset, limit = m.groups()
        inst = self._instance(name, "fn_cdc_get_net_changes_")
        if not inst.supports_net:
            raise FakeMssqlError(208, f"Invalid object name 'cdc.fn_cdc_get_net_changes_{name}'")
        lo_n, hi_n = _num(lo), _num(hi)
        self._range(inst, lo_n, hi_n, "fn_cdc_get_net_changes_")
        pk_idx = [inst.captured.index(k) for k in inst.table.pk]
        first: dict[tuple[Any, ...], int] = {}
        last: dict[tuple[Any, ...], tuple[int, int, tuple[Any, ...]]] = {}
        for c_lsn, _seq, op, values in sorted(inst.changes, key=lambda c: c[:3]):
            if not lo_n <= c_lsn <= hi_n:
                continue
            key = tuple(values[i] for i in pk_idx)
            if op == 3:  # an update's old image: for net purposes the old key is deleted if the key moved
                first.setdefault(key, 4)
                last[key] = (c_lsn, 1, values)
                continue
            first.setdefault(key, op)
            last[key] = (c_lsn, op, values)
        rows = []
        for key, (c_lsn, op, values) in last.items():
            began = first[key]
            if began == 2 and op == 1:
                continue  # inserted and deleted within the range: no net change
            net_op = 1 if op == 1 else (2 if began == 2 else 4)
            rows.append((c_lsn, key, net_op, values))
        assert _names(order) == ["__$start_lsn", *inst.table.pk]
        rows.sort(key=lambda r: (r[0], r[1]))
        page = rows[int(offset) : int(offset) + int(limit)]
        return [(lsn(r[0]), r[2], self.lsn_time[r[0]], *self._project(inst, cols, r[3])) for r in page]

    def snapshot(self, m: re.Match[str]) -> list[tuple[Any, ...]]:
        limit, cols, schema, name, where, order = m.groups()
        t = self.tables[(schema, name)]
        assert _names(order) == t.pk
        rows = sorted(t.rows.values(), key=t.key)
        if where:
            rows = [r for r in rows if _where(where, r)]
        return [tuple(r[c] for c in _names(cols)) for r in rows[: int(limit)]]


class Tx:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.log: list[tuple[Table, int, Any]] = []

    def insert(self, table: str, **row: Any) -> None:
        t = self.server.tables[tuple(table.split("."))]  # type: ignore[index]
        full = {c.name: row.get(c.name) for c in t.columns}
        t.rows[t.key(full)] = full
        self.log.append((t, 2, full))

    def update(self, table: str, key: tuple[Any, ...], **changes: Any) -> None:
        t = self.server.tables[tuple(table.split("."))]  # type: ignore[index]
        old = t.rows.pop(key)
        new = {**old, **changes}
        t.rows[t.key(new)] = new
        self.log.append((t, 34, (old, new)))

    def delete(self, table: str, key: tuple[Any, ...]) -> None:
        t = self.server.tables[tuple(table.split("."))]  # type: ignore[index]
        self.log.append((t, 1, t.rows.pop(key)))


class FakeCursor:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, operation: str, params: dict[str, Any] | None = None) -> None:
        sql = operation % {k: quote(v) for k, v in params.items()} if params is not None else operation
        self._rows = self.server.execute(sql)

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def close(self) -> None:
        pass


class FakeConnection:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.closed = False

    def cursor(self) -> FakeCursor:
        assert not self.closed, "cursor on a closed connection"
        return FakeCursor(self.server)

    def close(self) -> None:
        self.closed = True


def _num(hex_literal: str) -> int:
    return int(hex_literal[2:], 16)


def _names(cols: str) -> list[str]:
    out = []
    for raw in cols.split(", "):
        part = raw.strip()
        out.append(part[1:-1].replace("]]", "]") if part.startswith("[") else part)
    return out


def _literal(text: str, like: Any) -> Any:
    if text.startswith("N'"):
        value = text[2:-1].replace("''", "'")
        return type(like)(value) if isinstance(like, int | Decimal) else value  # implicit conversion
    return int(text)


def _where(where: str, row: dict[str, Any]) -> bool:
    """``([a] > x) OR ([a] = x AND [b] > y)``: the keyset predicate the snapshot pages use."""
    for term in where.split(" OR "):
        ok = True
        for cond in term.strip("()").split(" AND "):
            m = re.fullmatch(r"\[(.+?)\] (=|>) (N'.*'|-?\d+)", cond)
            assert m, cond
            value = row[m.group(1)]
            lit = _literal(m.group(3), value)
            ok = ok and (value == lit if m.group(2) == "=" else value > lit)
        if ok:
            return True
    return False


_L = r"(0x[0-9a-f]{20})"
_DISPATCH: list[tuple[str, Any]] = [
    (
        r"SELECT name, is_cdc_enabled FROM sys\.databases WHERE database_id = DB_ID\(\)",
        lambda s, m: [(s.database, 1 if s.cdc_enabled else 0)],
    ),
    (
        r"SELECT capture_instance, OBJECT_SCHEMA_NAME\(source_object_id\) AS source_schema, "
        r"OBJECT_NAME\(source_object_id\) AS source_table, supports_net_changes "
        r"FROM cdc\.change_tables ORDER BY capture_instance",
        lambda s, m: [
            (i.name, i.table.schema, i.table.name, 1 if i.supports_net else 0)
            for i in sorted(s.instances.values(), key=lambda i: i.name)
        ],
    ),
    (
        r"SELECT cc\.column_name FROM cdc\.captured_columns AS cc JOIN cdc\.change_tables AS ct "
        r"ON ct\.object_id = cc\.object_id WHERE ct\.capture_instance = N'(.*)' ORDER BY cc\.column_ordinal",
        lambda s, m: [(c,) for c in (s.instances[m[1]].captured if m[1] in s.instances else [])],
    ),
    (
        r"SELECT j\.job_id, .* FROM msdb\.dbo\.cdc_jobs AS j LEFT JOIN msdb\.dbo\.sysjobactivity AS a .* "
        r"WHERE j\.database_id = DB_ID\(\) AND j\.job_type = N'capture'",
        lambda s, m: [] if s.job is None else [("job-1", 1 if s.job else 0)],
    ),
    (
        r"SELECT sys\.fn_cdc_get_min_lsn\(N'(.*)'\) AS min_lsn",
        lambda s, m: [(lsn(s.instances[m[1]].start_lsn) if m[1] in s.instances else ZERO,)],
    ),
    (
        r"SELECT sys\.fn_cdc_get_max_lsn\(\) AS max_lsn",
        lambda s, m: [(lsn(s.max_lsn()) if s.lsn_time else None,)],
    ),
    (r"SELECT sys\.fn_cdc_increment_lsn\(" + _L + r"\) AS next_lsn", lambda s, m: [(lsn(_num(m[1]) + 1),)]),
    (
        r"SELECT sys\.fn_cdc_map_lsn_to_time\(" + _L + r"\) AS commit_time",
        lambda s, m: [(s.lsn_time.get(_num(m[1])),)],
    ),
    (
        r"SELECT TOP \((\d+)\) __\$start_lsn, __\$seqval, __\$operation, "
        r"sys\.fn_cdc_map_lsn_to_time\(__\$start_lsn\) AS __commit_time, (.+) "
        r"FROM cdc\.\[fn_cdc_get_all_changes_(.+)\]\(" + _L + ", " + _L + r", N'(all|all update old)'\) "
        r"WHERE __\$start_lsn > " + _L + r" OR __\$seqval >= " + _L + " "
        r"ORDER BY __\$start_lsn, __\$seqval, __\$operation",
        FakeServer.all_changes,
    ),
    (
        r"SELECT __\$start_lsn, __\$operation, "
        r"sys\.fn_cdc_map_lsn_to_time\(__\$start_lsn\) AS __commit_time, (.+) "
        r"FROM cdc\.\[fn_cdc_get_net_changes_(.+)\]\(" + _L + ", " + _L + r", N'all'\) "
        r"ORDER BY (.+) OFFSET (\d+) ROWS FETCH NEXT (\d+) ROWS ONLY",
        FakeServer.net_changes,
    ),
    (
        r"SELECT TOP \((\d+)\) (.+) FROM \[(.+)\]\.\[(.+)\](?: WHERE (.+))? ORDER BY (.+)",
        FakeServer.snapshot,
    ),
    (
        r"SELECT COLUMN_NAME, .* FROM INFORMATION_SCHEMA\.COLUMNS WHERE TABLE_SCHEMA = N'(.*)' "
        r"AND TABLE_NAME = N'(.*)' ORDER BY ORDINAL_POSITION",
        lambda s, m: [
            (c.name, c.data_type, c.char_length, c.precision, c.scale, "YES" if c.nullable else "NO")
            for c in (s.tables[(m[1], m[2])].columns if (m[1], m[2]) in s.tables else [])
        ],
    ),
    (
        r"SELECT kcu\.COLUMN_NAME FROM INFORMATION_SCHEMA\.TABLE_CONSTRAINTS .* "
        r"WHERE tc\.CONSTRAINT_TYPE = N'PRIMARY KEY' AND tc\.TABLE_SCHEMA = N'(.*)' "
        r"AND tc\.TABLE_NAME = N'(.*)' ORDER BY kcu\.ORDINAL_POSITION",
        lambda s, m: [(k,) for k in (s.tables[(m[1], m[2])].pk if (m[1], m[2]) in s.tables else [])],
    ),
]
