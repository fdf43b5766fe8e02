"""Logical column types shared by sources, the stage and the warehouses.

A schema names types the way a SQL user would (``bigint``, ``numeric(12,2)``, ``varchar(80)``,
``timestamptz``, ``inet``, ``int4range``, ``integer[]``). Each maps to one Arrow type for staging; each
warehouse dialect maps it to DDL. Wire text becomes typed Arrow a whole column at a time (``text_to_arrow``).

Types a warehouse may not have (``TEXT_KINDS``: timetz, interval, money, network, bit string, xml, geometric,
range and multirange types) and arrays of any kind (kind ``<element kind>[]``, the element's length or
precision kept) are staged as their PostgreSQL text output, unchanged; each dialect then says whether it
creates the native type (which reads that text) or a text column that keeps it as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from replicator.values import temporal

# Staged as PostgreSQL's text output, as sent.
TEXT_KINDS = frozenset(
    {
        "timetz", "interval", "money", "inet", "cidr", "macaddr", "macaddr8", "bit", "varbit", "xml",
        "point", "line", "lseg", "box", "path", "polygon", "circle",
        "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange",
        "int4multirange", "int8multirange", "nummultirange", "tsmultirange", "tstzmultirange",
        "datemultirange",
    }
)  # fmt: skip
SCALAR_KINDS = frozenset(
    {
        "smallint", "integer", "bigint", "numeric", "real", "double", "boolean", "oid",
        "text", "varchar", "char", "date", "timestamp", "timestamptz", "time", "uuid", "json", "bytea",
    }
) | TEXT_KINDS  # fmt: skip
KINDS = SCALAR_KINDS | frozenset(f"{k}[]" for k in SCALAR_KINDS)
_SIZED = ("varchar", "char", "bit", "varbit")  # kinds whose length is part of the type

_ALIASES = {
    "int2": "smallint", "int": "integer", "int4": "integer", "int8": "bigint", "decimal": "numeric",
    "float4": "real", "float8": "double", "double precision": "double", "float": "double", "bool": "boolean",
    "character varying": "varchar", "character": "char", "string": "text", "jsonb": "json",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "datetime": "timestamp", "datetime2": "timestamp", "datetimeoffset": "timestamptz",
    "nvarchar": "varchar", "nchar": "char", "tinyint": "smallint", "uniqueidentifier": "uuid",
    "binary": "bytea", "varbinary": "bytea", "blob": "bytea", "time without time zone": "time",
    # PostgreSQL spellings
    "time with time zone": "timetz", "bpchar": "char", "bit varying": "varbit",
    "smallserial": "smallint", "serial": "integer", "bigserial": "bigint", "serial2": "smallint",
    "serial4": "integer", "serial8": "bigint",
    # Same text, no native type kept: name (63 bytes at most) and citext (an extension the warehouse may
    # lack; case-insensitive comparison is lost, the values are not).
    "name": "text", "citext": "text",
}  # fmt: skip
_PRECISION_ONLY = frozenset({"time", "timetz", "timestamp", "timestamptz", "interval"})  # (p): 0..6

_MAX_RE = re.compile(r"\s*\(\s*max\s*\)\s*$")
_TYPE_RE = re.compile(r"^\s*([a-z][a-z0-9 ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")
_ARRAY_RE = re.compile(r"^(.*?)(?:\s*\[\s*\d*\s*\])+$|^(.*?)\s+array(?:\s*\[\s*\d*\s*\])?$")
# "timestamp(3) with time zone": the precision sits inside the name
_ZONED_RE = re.compile(r"^\s*(time|timestamp)\s*(\(\s*\d+\s*\))?\s*(with|without) time zone\s*$")
_INTERVAL_RE = re.compile(
    r"^\s*interval(?:\s+(?:year|month|day|hour|minute|second)(?:\s+to\s+(?:month|hour|minute|second))?)?"
    r"\s*(\(\s*\d+\s*\))?\s*$"
)


@dataclass(frozen=True, slots=True)
class LogicalType:
    """``kind`` is one of KINDS; ``length`` for varchar/char/bit/varbit, ``precision``/``scale`` for
    numeric. An array kind ends in ``[]`` and carries its element's length, precision and scale."""

    kind: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None

    def __str__(self) -> str:
        base = self.kind.removesuffix("[]")
        suffix = self.kind[len(base) :]
        if base in _SIZED and self.length is not None:
            return f"{base}({self.length}){suffix}"
        if base == "numeric" and self.precision is not None:
            return f"numeric({self.precision},{self.scale or 0}){suffix}"
        return self.kind

    @property
    def arrow(self) -> pa.DataType:
        return _arrow_type(self)

    @property
    def element(self) -> LogicalType | None:
        """The element type of an array kind; None for other kinds."""
        if not self.kind.endswith("[]"):
            return None
        return LogicalType(self.kind[:-2], self.length, self.precision, self.scale)


def parse_type(text: str) -> LogicalType:
    """Parse ``"numeric(12, 2)"``, ``"varchar(80)"``, ``"int8"``, ``"inet[]"`` ...; raises ValueError naming
    the text (and what to declare instead)."""
    lowered = _MAX_RE.sub("", text.lower())  # SQL Server's varchar(max) / varbinary(max): unbounded
    array = _ARRAY_RE.match(lowered)
    if array:
        element = _parse_scalar(array.group(1) or array.group(2) or "", text)
        return LogicalType(f"{element.kind}[]", element.length, element.precision, element.scale)
    return _parse_scalar(lowered, text)


def _parse_scalar(lowered: str, text: str) -> LogicalType:
    zoned = _ZONED_RE.match(lowered)
    if zoned:
        name = {"time": "time", "timestamp": "timestamp"}[zoned.group(1)]
        name += " with time zone" if zoned.group(3) == "with" else " without time zone"
        lowered = name + (zoned.group(2) or "")
    if _INTERVAL_RE.match(lowered):
        lowered = "interval" + (_INTERVAL_RE.match(lowered).group(1) or "")  # type: ignore[union-attr]
    m = _TYPE_RE.match(lowered)
    if not m:
        raise ValueError(f"cannot parse column type {text!r}")
    kind = _ALIASES.get(m.group(1), m.group(1))
    a = int(m.group(2)) if m.group(2) else None
    b = int(m.group(3)) if m.group(3) else None
    if kind == "bit" and a is None:
        kind = "boolean"  # SQL Server's bit; PostgreSQL's bit string is declared with its length: bit(1)
    if kind not in SCALAR_KINDS:
        raise ValueError(
            f"unknown column type {text!r}; expected one of {sorted(SCALAR_KINDS)} or an array of one"
            " (type[]). Enums and other user-defined types: declare text; a domain: declare its base type"
        )
    if kind == "numeric":
        if a is not None and not 1 <= a <= 38:
            raise ValueError(
                f"numeric precision must be 1..38 in {text!r} (declare numeric for any precision)"
            )
        if a is not None and b is not None and b > a:
            raise ValueError(f"numeric scale exceeds precision in {text!r}")
        return LogicalType(kind, precision=a, scale=(b or 0) if a is not None else None)
    if kind in _SIZED:
        if b is not None or (a is not None and a < 1):
            raise ValueError(f"type {kind} takes one length of at least 1 in {text!r}")
        return LogicalType(kind, length=a)
    if kind in _PRECISION_ONLY and a is not None and b is None:
        # The source already rounded its values to this precision: the microsecond type holds them exactly.
        if a > 6:
            raise ValueError(f"fractional second precision must be 0..6 in {text!r}")
        return LogicalType(kind)
    if a is not None:
        raise ValueError(f"type {kind} takes no length in {text!r}")
    return LogicalType(kind)


def _arrow_type(t: LogicalType) -> pa.DataType:
    k = t.kind
    simple: dict[str, pa.DataType] = {
        "smallint": pa.int16(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
        "oid": pa.int64(),  # unsigned 32 bits: int64 holds it on every engine's Parquet reader
        "real": pa.float32(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "time": pa.time64("us"),
        "bytea": pa.binary(),
    }
    if k in simple:
        return simple[k]
    if k == "numeric":
        # Unconstrained numeric keeps its exact text: no Arrow decimal can hold every PostgreSQL numeric.
        if t.precision is None:
            return pa.string()
        return pa.decimal128(t.precision, t.scale or 0)
    return pa.string()  # text, varchar, char, uuid, json, TEXT_KINDS and arrays: the wire text as sent


_TRUE = ["t", "true", "1", "y", "yes", "on"]
_FALSE = ["f", "false", "0", "n", "no", "off"]


def text_to_arrow(values: list[str | None] | pa.Array | pa.ChunkedArray, t: LogicalType) -> pa.Array:
    """Turn a column of wire text (a list, or an Arrow string array) into a typed Arrow array in bulk.

    Raises ``ValueError`` naming the first row (0-based) whose text does not parse as ``t``, so the caller
    can quarantine exactly that row.
    """
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, type=pa.string())
    try:
        return cast_text(array, t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    # Bulk cast failed: find the first offending value so the error names it.
    target = t.arrow
    text = array if array.type == pa.string() else array.cast(pa.string())
    for i, v in enumerate(text.to_pylist()):
        if v is None:
            continue
        try:
            _cast(pa.array([v], type=pa.string()), t, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise ValueError(f"row {i}: {v[:80]!r} is not a valid {t}: {exc}") from None
    raise ValueError(f"column of {t} could not be converted")  # pragma: no cover - bulk and per-row disagree


def cast_text(values: pa.Array | pa.ChunkedArray, t: LogicalType) -> pa.Array:
    """``text_to_arrow`` in bulk only: raises (``ValueError``, ``ArrowInvalid``...) when any value does not
    parse, without looking for which. For callers that find the bad rows themselves
    (``replicator.schema.convert`` bisects), where the per-value search would make many bad rows cost
    quadratic time."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    text = values if values.type == pa.string() else values.cast(pa.string())
    target = t.arrow
    if pa.types.is_string(target):
        return text
    return _cast(text, t, target)


def _cast(text: pa.Array, t: LogicalType, target: pa.DataType) -> pa.Array:
    k = t.kind
    if k == "boolean":
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(text))
        is_true = pc.is_in(lowered, value_set=pa.array(_TRUE))
        is_false = pc.is_in(lowered, value_set=pa.array(_FALSE))
        bad = pc.and_(pc.is_valid(text), pc.invert(pc.or_(is_true, is_false)))
        if pc.any(bad).as_py():
            raise ValueError("not a boolean")
        return pc.if_else(pc.is_valid(text), is_true, pa.scalar(None, pa.bool_()))
    # Dates and times, with PostgreSQL's infinities, BC years, 24:00:00 (see replicator.values.temporal).
    if k == "time":
        return temporal.parse_time(text)
    if k == "date":
        return temporal.parse_date(text)
    if k in ("timestamp", "timestamptz"):
        return temporal.parse_timestamp(text, zoned=k == "timestamptz")
    if k == "oid":
        ints = pc.cast(text, pa.int64())
        if pc.any(pc.or_(pc.less(ints, 0), pc.greater(ints, 0xFFFFFFFF))).as_py():
            raise ValueError("an oid is 0..4294967295")
        return ints
    if k == "bytea":
        return pa.array([_bytea(v) for v in text.to_pylist()], type=pa.binary())
    if pa.types.is_decimal(target):
        return pc.cast(pc.utf8_trim_whitespace(text), target)
    return pc.cast(text, target)


def _bytea(v: Any) -> bytes | None:
    if v is None:
        return None
    s = str(v)
    if s.startswith("\\x"):
        return bytes.fromhex(s[2:])
    if s.startswith("0x"):
        return bytes.fromhex(s[2:])
    return s.encode()


_INTS = {"smallint": 1, "integer": 2, "bigint": 3}
_FLOATS = {"real": 1, "double": 2}
_STRINGS = frozenset({"varchar", "text", "char"})


def widening(old: LogicalType, new: LogicalType) -> tuple[str, LogicalType]:
    """How values of type ``new`` go into a column of type ``old`` (a batch into its target, a source's
    changed column into its declared type).

    Returns ("same" | "fits" | "widen" | "incompatible", the type the target column should have).
    """
    if old == new:
        return "same", old
    if old.kind in _INTS and new.kind in _INTS:
        return ("fits", old) if _INTS[new.kind] <= _INTS[old.kind] else ("widen", new)
    if old.kind in _FLOATS and new.kind in _FLOATS:
        return ("fits", old) if _FLOATS[new.kind] <= _FLOATS[old.kind] else ("widen", new)
    if old.kind in _STRINGS and new.kind in _STRINGS:
        if old.kind == "text" or (old.length is None and old.kind == "varchar"):
            return "fits", old
        if new.kind == "text" or new.length is None:
            return "widen", LogicalType("text")
        assert old.length is not None and new.length is not None
        if new.length <= old.length:
            return "fits", old
        return "widen", LogicalType(old.kind if old.kind == new.kind else "varchar", length=new.length)
    if old.kind == "numeric" and new.kind == "numeric":
        if old.precision is None:
            return "fits", old
        if new.precision is None:
            return "widen", new
        old_int, new_int = old.precision - (old.scale or 0), new.precision - (new.scale or 0)
        scale = max(old.scale or 0, new.scale or 0)
        digits = max(old_int, new_int) + scale
        if digits > 38:
            return "incompatible", new
        wanted = LogicalType("numeric", precision=digits, scale=scale)
        return ("fits", old) if wanted == old else ("widen", wanted)
    return "incompatible", new
