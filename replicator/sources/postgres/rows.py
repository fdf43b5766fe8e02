"""PostgreSQL source: positions, column types of Relation messages, and row messages as ``Change``s.

Positions and types are described in ``replicator.sources.postgres.source``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from replicator.model import Change, Column, Op, Position, TableId, TableSchema
from replicator.sources.postgres import pgoutput as pg
from replicator.values import LogicalType, widening

# Built-in types (OID, array type OID, logical kind) for columns that appear after start-up (Relation
# messages); other types (enums, domains, composites, extensions' types) stay text. pgoutput names a domain
# column by the domain's OID: declare the base type in the schema file to get more than text.
_BUILTIN = [
    (16, 1000, "boolean"), (17, 1001, "bytea"), (18, 1002, "text"), (19, 1003, "text"), (20, 1016, "bigint"),
    (21, 1005, "smallint"), (23, 1007, "integer"), (25, 1009, "text"), (26, 1028, "oid"), (114, 199, "json"),
    (142, 143, "xml"), (600, 1017, "point"), (601, 1018, "lseg"), (602, 1019, "path"), (603, 1020, "box"),
    (604, 1027, "polygon"), (628, 629, "line"), (650, 651, "cidr"), (700, 1021, "real"),
    (701, 1022, "double"), (718, 719, "circle"), (774, 775, "macaddr8"), (790, 791, "money"),
    (829, 1040, "macaddr"), (869, 1041, "inet"), (1042, 1014, "char"), (1043, 1015, "varchar"),
    (1082, 1182, "date"), (1083, 1183, "time"), (1114, 1115, "timestamp"), (1184, 1185, "timestamptz"),
    (1186, 1187, "interval"), (1266, 1270, "timetz"), (1560, 1561, "bit"), (1562, 1563, "varbit"),
    (1700, 1231, "numeric"), (2950, 2951, "uuid"), (3802, 3807, "json"), (3904, 3905, "int4range"),
    (3906, 3907, "numrange"), (3908, 3909, "tsrange"), (3910, 3911, "tstzrange"), (3912, 3913, "daterange"),
    (3926, 3927, "int8range"), (4451, 6150, "int4multirange"), (4532, 6151, "nummultirange"),
    (4533, 6152, "tsmultirange"), (4534, 6153, "tstzmultirange"), (4535, 6155, "datemultirange"),
    (4536, 6157, "int8multirange"),
]  # fmt: skip
_OID_KIND = {oid: kind for oid, _, kind in _BUILTIN} | {array: f"{kind}[]" for _, array, kind in _BUILTIN}


def column_type(oid: int, typmod: int) -> LogicalType:
    """The logical type of a pgoutput column (an array's ``typmod`` is its element's)."""
    kind = _OID_KIND.get(oid, "text")
    base = kind.removesuffix("[]")
    if base == "numeric" and typmod >= 4:
        p, s = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        return LogicalType(kind, precision=p, scale=s) if 1 <= p <= 38 and s <= p else LogicalType(kind)
    if base in ("varchar", "char") and typmod >= 4:
        return LogicalType(kind, length=typmod - 4)
    if base in ("bit", "varbit") and typmod >= 1:
        return LogicalType(kind, length=typmod)  # no header in a bit string's typmod
    if base == "bit":
        return LogicalType(kind.replace("bit", "varbit"))  # no length known: any bit string fits
    return LogicalType(kind)


def encode_position(lsn: int, ordinal: int) -> Position:
    return Position(f"{lsn:016X}.{ordinal:012X}")


_HEX3 = pa.array([f"{i:03X}" for i in range(4096)], pa.string())  # 12 bits as 3 upper-case hex digits


def position_range(lsn: int, first: int, n: int) -> pa.StringArray:
    """``encode_position(lsn, i).value`` for ``i`` in ``first .. first + n - 1``, built column-wise (a
    snapshot copy numbers millions of rows: a Python f-string per row costs 3x more)."""
    ordinals = pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n), start=first - 1)
    digits = [pc.take(_HEX3, pc.bit_wise_and(pc.shift_right(ordinals, 12 * k), 0xFFF)) for k in (3, 2, 1, 0)]
    joined: pa.StringArray = pc.binary_join_element_wise(f"{lsn:016X}.", *digits, "")
    return joined


def decode_position(position: Position) -> tuple[int, int]:
    lsn, _, ordinal = position.value.partition(".")
    return int(lsn, 16), int(ordinal, 16)


OPS = {73: "I", 85: "U", 68: "D"}  # pgoutput message tag -> ChangeChunk ``_op``


@dataclass(slots=True)
class Rel:
    table: TableId
    index: list[int] | None  # schema column i <- relation column index[i] (-1: absent); None: same order
    names: tuple[str, ...]  # relation column names
    key: list[int]  # indexes (in schema order values) of the primary key


@dataclass(slots=True)
class Txn:
    final_lsn: int
    commit_time: datetime
    end_lsn: int = 0
    committed: bool = False
    prefix: str = ""  # f"{final_lsn:016X}."
    ordinal: int = 0  # changes numbered so far (kept here: a read() may end inside a transaction)
    last: dict[TableId, str] = field(default_factory=dict)  # last position yielded per table


def row_values(rel: Rel, data: pg.TupleData) -> tuple[tuple[str | None, ...], frozenset[str]]:
    """A tuple's values in schema column order, and the names of its unchanged TOAST columns."""
    unchanged = frozenset(rel.names[i] for i in data.unchanged) if data.unchanged else frozenset()
    if rel.index is None:
        return data.values, unchanged
    v = data.values
    return tuple(v[j] if j >= 0 else None for j in rel.index), unchanged


def row_changes(rel: Rel, msg: pg.Insert | pg.Update | pg.Delete, txn: Txn) -> list[Change]:
    """The changes one row message of ``rel`` makes, numbered within ``txn``."""
    t, prefix = txn.commit_time, txn.prefix
    if type(msg) is pg.Insert:
        values, unchanged = row_values(rel, msg.new)
        txn.ordinal += 1
        return [Change(rel.table, Op.INSERT, values, Position(prefix + f"{txn.ordinal:012X}"), t)]
    if type(msg) is pg.Delete:
        values, _ = row_values(rel, msg.old)
        txn.ordinal += 1
        return [Change(rel.table, Op.DELETE, values, Position(prefix + f"{txn.ordinal:012X}"), t)]
    assert isinstance(msg, pg.Update)
    values, unchanged = row_values(rel, msg.new)
    prior: tuple[str | None, ...] | None = None
    if msg.old is not None:
        old, old_unchanged = row_values(rel, msg.old)
        if unchanged and not msg.old_is_key:
            # REPLICA IDENTITY FULL: the old row carries what the new one left out (unless unchanged too).
            known = unchanged - old_unchanged
            values = tuple(
                old[i] if n in known else v for i, (n, v) in enumerate(zip(_names(rel), values, strict=True))
            )
            unchanged = unchanged & old_unchanged
        if any(old[i] != values[i] for i in rel.key):
            # The key changed: one change that removes the old key's row and upserts the new key, taking
            # the columns left unchanged from the old row (see ``Change.prior``). It takes two ordinals, as
            # the delete and the update it stands for did before: positions stay stable across versions.
            prior = old
            txn.ordinal += 1
    txn.ordinal += 1
    pos = Position(prefix + f"{txn.ordinal:012X}")
    return [Change(rel.table, Op.UPDATE, values, pos, t, unchanged, prior)]


def _names(rel: Rel) -> tuple[str, ...]:
    """Column names in schema order (the values' order after ``row_values``)."""
    if rel.index is None:
        return rel.names
    return tuple(rel.names[j] if j >= 0 else "" for j in rel.index)


def widened_columns(schema: TableSchema, found: Mapping[str, LogicalType]) -> dict[str, LogicalType]:
    """The columns of ``schema`` that the source's types (``found``, by name) widen, with the wider type
    (``replicator.values.widening``). A declared type the source's does not widen is kept: ``text`` for
    anything, a wider number, and the declared form of an unbounded numeric (README: PostgreSQL types)."""
    out = {}
    for col in schema.columns:
        now = found.get(col.name)
        if now is None or (now.kind == "numeric" and now.precision is None):
            continue
        verdict, wider = widening(col.type, now)
        if verdict == "widen":
            out[col.name] = wider
    return out


def relation_shape(
    table: TableId, schema: TableSchema, msg: pg.Relation
) -> tuple[TableSchema, list[str], Rel]:
    """What a Relation message of ``table`` (known as ``schema``) says: the schema extended by the columns
    it lacks (their types from the type OIDs) and with the columns the source widened (``ALTER COLUMN ...
    TYPE`` int -> bigint, a longer varchar, more numeric digits: the target widens too, instead of the
    table stopping at the first value that does not fit), the names of the columns added or widened, and
    how to map its tuples. A declared type the source's does not widen (``text`` for anything, a wider
    number) is kept."""
    names = tuple(c.name for c in msg.columns)
    new = [c for c in msg.columns if c.name not in schema.column_names]
    sent = {c.name: column_type(c.type_oid, c.type_modifier) for c in msg.columns}
    widened = widened_columns(schema, sent)
    if new or widened:
        columns = tuple(
            Column(c.name, widened[c.name], c.nullable) if c.name in widened else c for c in schema.columns
        ) + tuple(Column(c.name, sent[c.name]) for c in new)
        schema = TableSchema(table, columns, schema.primary_key)
    index = [names.index(n) if n in names else -1 for n in schema.column_names]
    same = index == list(range(len(names))) and len(names) == len(index)
    key = [schema.column_names.index(k) for k in schema.primary_key]
    return schema, [*widened, *(c.name for c in new)], Rel(table, None if same else index, names, key)
