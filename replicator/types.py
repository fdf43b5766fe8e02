"""Logical column types shared by sources, the stage and the warehouses.

A schema names types the way a SQL user would (``bigint``, ``numeric(12,2)``, ``varchar(80)``,
``timestamptz``). Each maps to one Arrow type for staging; each warehouse dialect maps it to DDL.
Wire text becomes typed Arrow a whole column at a time (``text_to_arrow``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

KINDS = frozenset(
    {
        "smallint", "integer", "bigint", "numeric", "real", "double", "boolean",
        "text", "varchar", "char", "date", "timestamp", "timestamptz", "time", "uuid", "json", "bytea",
    }
)  # fmt: skip

_ALIASES = {
    "int2": "smallint", "int": "integer", "int4": "integer", "int8": "bigint", "decimal": "numeric",
    "float4": "real", "float8": "double", "double precision": "double", "float": "double", "bool": "boolean",
    "character varying": "varchar", "character": "char", "string": "text", "jsonb": "json",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "datetime": "timestamp", "datetime2": "timestamp", "datetimeoffset": "timestamptz", "bit": "boolean",
    "nvarchar": "varchar", "nchar": "char", "tinyint": "smallint", "uniqueidentifier": "uuid",
    "binary": "bytea", "varbinary": "bytea", "blob": "bytea", "time without time zone": "time",
}  # fmt: skip

_MAX_RE = re.compile(r"\s*\(\s*max\s*\)\s*$")
_TYPE_RE = re.compile(r"^\s*([a-z][a-z0-9 ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


@dataclass(frozen=True, slots=True)
class LogicalType:
    """``kind`` is one of KINDS; ``length`` for varchar/char, ``precision``/``scale`` for numeric."""

    kind: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None

    def __str__(self) -> str:
        if self.kind in ("varchar", "char") and self.length is not None:
            return f"{self.kind}({self.length})"
        if self.kind == "numeric" and self.precision is not None:
            return f"numeric({self.precision},{self.scale or 0})"
        return self.kind

    @property
    def arrow(self) -> pa.DataType:
        return _arrow_type(self)


def parse_type(text: str) -> LogicalType:
    """Parse ``"numeric(12, 2)"``, ``"varchar(80)"``, ``"int8"`` ...; raises ValueError naming the text."""
    lowered = _MAX_RE.sub("", text.lower())  # SQL Server's varchar(max) / varbinary(max): unbounded
    m = _TYPE_RE.match(lowered)
    if not m:
        raise ValueError(f"cannot parse column type {text!r}")
    kind = _ALIASES.get(m.group(1), m.group(1))
    if kind not in KINDS:
        raise ValueError(f"unknown column type {text!r}; expected one of {sorted(KINDS)}")
    a = int(m.group(2)) if m.group(2) else None
    b = int(m.group(3)) if m.group(3) else None
    if kind == "numeric":
        if a is not None and not 1 <= a <= 38:
            raise ValueError(f"numeric precision must be 1..38 in {text!r}")
        if a is not None and b is not None and b > a:
            raise ValueError(f"numeric scale exceeds precision in {text!r}")
        return LogicalType(kind, precision=a, scale=(b or 0) if a is not None else None)
    if kind in ("varchar", "char"):
        return LogicalType(kind, length=a)
    if a is not None:
        raise ValueError(f"type {kind} takes no length in {text!r}")
    return LogicalType(kind)


def _arrow_type(t: LogicalType) -> pa.DataType:
    k = t.kind
    simple: dict[str, pa.DataType] = {
        "smallint": pa.int16(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
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
    return pa.string()  # text, varchar, char, uuid, json


_TRUE = ["t", "true", "1", "y", "yes", "on"]
_FALSE = ["f", "false", "0", "n", "no", "off"]


def text_to_arrow(values: list[str | None] | pa.Array | pa.ChunkedArray, t: LogicalType) -> pa.Array:
    """Turn a column of wire text (a list, or an Arrow string array) into a typed Arrow array in bulk.

    Raises ``ValueError`` naming the first row (0-based) whose text does not parse as ``t``, so the caller
    can quarantine exactly that row.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    text = values if isinstance(values, pa.Array) else pa.array(values, type=pa.string())
    if text.type != pa.string():
        text = text.cast(pa.string())
    target = t.arrow
    if pa.types.is_string(target):
        return text
    try:
        return _cast(text, t, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    # Bulk cast failed: find the first offending value so the error names it.
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
    parse, without looking for which. For callers that find the bad rows themselves (``replicator.convert``
    bisects), where the per-value search would make many bad rows cost quadratic time."""
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
    if k in ("timestamp", "timestamptz", "time"):
        # SQL Server writes 7 fractional digits; PostgreSQL writes "+00" offsets. Arrow wants us and "+00:00".
        text = pc.replace_substring_regex(text, pattern=r"(\.\d{6})\d+", replacement=r"\1")
        if k == "timestamptz":
            text = pc.replace_substring_regex(text, pattern=r"([+-]\d\d)$", replacement=r"\1:00")
            text = pc.replace_substring_regex(text, pattern=r" ?Z$", replacement="+00:00")
            parsed = pc.cast(text, pa.timestamp("us", tz="UTC"))
            return parsed
        if k == "time":
            return pc.cast(text, pa.time64("us"))
        return pc.cast(text, target)
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
