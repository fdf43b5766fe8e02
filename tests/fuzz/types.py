"""The column types the fuzzer writes, as a table: one ``FuzzType`` per source type.

Each entry says how the column is declared at the source and in the schema file (which may depend on the
target: an unbounded ``numeric`` is declared ``text`` where the warehouse has no exact type for it, as
``replicator/sources/postgres.py`` documents), which values to write (edge values first, then random ones),
what server-side expression fills it in bulk, and how a value read back is brought to one canonical form.

Values are PostgreSQL input text (or None for NULL), sent as untyped literals, so PostgreSQL converts them
to the column's type exactly as a client's INSERT would. Every side is read as text (``read``) and then
canonicalised (``canon``): the text forms differ between engines (DuckDB prints ``inf``, PostgreSQL
``Infinity``), the values must not.

To add a type (defect 2's ``time``, ``inet``, ...), append an entry to ``TYPES``; ``EXTRA_TYPES`` holds
those that are generated only when asked for (``--types``), until they round-trip.
"""

from __future__ import annotations

import json
import random
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

Gen = Callable[[random.Random], str]


@dataclass(frozen=True)
class FuzzType:
    """A source column type: ``ddl`` at the source, ``schema`` in the schema file (per target kind where it
    differs: ``{"duckdb": "text"}``), ``edge`` values tried often, ``gen`` for random ones, ``bulk`` an SQL
    expression of ``g`` (a bigint) for server-side rows, ``canon`` the canonical form of a value read back
    as text, ``read`` the expression that reads column ``{c}`` as text on an engine (``pg`` or ``duckdb``)."""

    name: str
    ddl: str
    schema: str
    edge: tuple[str, ...]
    gen: Gen
    bulk: str
    canon: Callable[[str], Any] = str
    schema_for: dict[str, str] = field(default_factory=dict)
    read: dict[str, str] = field(default_factory=dict)
    addable: bool = True  # may be added mid-stream (ADD COLUMN): its type from the OID maps faithfully

    def schema_type(self, target: str) -> str:
        return self.schema_for.get(target, self.schema)

    def read_expr(self, engine: str, column: str) -> str:
        default = "CAST({c} AS VARCHAR)" if engine == "duckdb" else "{c}::text"
        return self.read.get(engine, default).format(c=column)

    def value(self, rng: random.Random) -> str:
        return rng.choice(self.edge) if rng.random() < 0.4 else self.gen(rng)


# -- canonical forms ----------------------------------------------------------------------------------------


def canon_int(text: str) -> Any:
    return int(text)


def canon_decimal(text: str) -> Any:
    """Numbers compare by value (``1.50`` = ``1.5``); NaN and the infinities by name."""
    low = text.strip().lower()
    if low in ("nan", "infinity", "inf", "+infinity", "-infinity", "-inf"):
        return {"nan": "NaN", "-infinity": "-Infinity", "-inf": "-Infinity"}.get(low, "Infinity")
    try:
        d = Decimal(text)
    except InvalidOperation:
        return f"not a number: {text!r}"
    return "0" if d.is_zero() else format(d.normalize(), "f")


def canon_float(text: str) -> Any:
    f = float(text.replace("Infinity", "inf"))
    return "nan" if f != f else repr(f)


def canon_real(text: str) -> Any:
    f = float(text.replace("Infinity", "inf"))
    return "nan" if f != f else repr(struct.unpack("f", struct.pack("f", f))[0])


def canon_bool(text: str) -> Any:
    return text.strip().lower() in ("t", "true", "1")


_BC = re.compile(r"\s*\(?BC\)?$")


def canon_date(text: str) -> Any:
    """``YYYY-MM-DD`` with PostgreSQL's `` BC`` or DuckDB's `` (BC)``; infinities by name."""
    bc = bool(_BC.search(text))
    return (_BC.sub("", text).strip().lower(), bc)


def canon_timestamp(text: str) -> Any:
    bc = bool(_BC.search(text))
    body = _BC.sub("", text).strip()
    try:
        return (datetime.fromisoformat(body).isoformat(), bc)
    except ValueError:
        return (body.lower(), bc)


def canon_timestamptz(text: str) -> Any:
    """The instant, in UTC (both sides are read with the session in UTC; offsets still normalised)."""
    bc = bool(_BC.search(text))
    body = _BC.sub("", text).strip()
    try:
        return (datetime.fromisoformat(body).astimezone(UTC).isoformat(), bc)
    except ValueError:
        return (body.lower(), bc)


def _json_norm(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _json_norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_norm(x) for x in v]
    if isinstance(v, Decimal):
        return canon_decimal(str(v))
    return v


def canon_json(text: str) -> Any:
    """The JSON value (jsonb drops whitespace and duplicate keys and orders keys; json keeps the text)."""
    try:
        value = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError:
        return f"not json: {text!r}"
    return json.dumps(_json_norm(value), sort_keys=True, ensure_ascii=False)


def canon_lower(text: str) -> Any:
    return text.lower()


def canon_hex(text: str) -> Any:
    return text.lower().removeprefix("\\x")


# -- value generators ---------------------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,;'\"\\|\t-_"
_UNICODE = (
    "é",
    "ß",
    "漢字",
    "😀",
    "👩\u200d👩\u200d👧\u200d👦",
    "\u05e9\u05dc\u05d5\u05dd",
    "e\u0301",
    "\u200b",
)
TEXT_EDGE = (
    "", " ", "NULL", "\\N", "null", "a,b", 'q"uote', "it's", "back\\slash", "tab\there", "line\nbreak",
    "cr\r\nlf", "👩\u200d👩\u200d👧\u200d👦", "e\u0301 vs é", "漢字かな", "\u202eRTL", "x" * 300,
)  # fmt: skip


def gen_text(rng: random.Random, longest: int = 40) -> str:
    parts = []
    for _ in range(rng.randint(0, longest // 4)):
        parts.append(rng.choice(_UNICODE) if rng.random() < 0.2 else rng.choice(_ALPHABET))
    return "".join(parts)


def _int(lo: int, hi: int) -> Gen:
    return lambda r: str(r.randint(lo, hi))


def _decimal(r: random.Random) -> str:
    whole = r.randint(0, 10 ** r.randint(1, 45))
    frac = str(r.randint(0, 10 ** r.randint(0, 20)))
    return f"{r.choice(['', '-'])}{whole}.{frac}"


def _date(r: random.Random) -> str:
    return f"{r.randint(1, 9999):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def _ts(r: random.Random) -> str:
    h, m, s, us = r.randint(0, 23), r.randint(0, 59), r.randint(0, 59), r.randint(0, 999999)
    return f"{_date(r)} {h:02d}:{m:02d}:{s:02d}.{us:06d}"


def _tstz(r: random.Random) -> str:
    return f"{_ts(r)}{r.choice(['+00', '-08', '+05:30', '+14', '-12:45'])}"


def _json(r: random.Random, depth: int = 0) -> Any:
    pick = r.randint(0, 6 if depth < 3 else 3)
    if pick == 0:
        return None
    if pick == 1:
        return r.choice([True, False])
    if pick == 2:
        return r.choice([r.randint(-(10**20), 10**20), r.random() * 1e6])
    if pick == 3:
        return gen_text(r, 12)
    if pick in (4, 5):
        return {gen_text(r, 8): _json(r, depth + 1) for _ in range(r.randint(0, 4))}
    return [_json(r, depth + 1) for _ in range(r.randint(0, 4))]


def gen_json(r: random.Random) -> str:
    return json.dumps(_json(r), ensure_ascii=r.random() < 0.5)


def _int_array(r: random.Random) -> str:
    if r.random() < 0.3:  # nested: PostgreSQL arrays are rectangular
        n = r.randint(1, 3)
        rows = [",".join(str(r.randint(-99, 99)) for _ in range(n)) for _ in range(r.randint(1, 3))]
        return "{" + ",".join("{" + x + "}" for x in rows) + "}"
    return (
        "{"
        + ",".join(r.choice([str(r.randint(-(2**31), 2**31 - 1)), "NULL"]) for _ in range(r.randint(0, 5)))
        + "}"
    )


def _text_array(r: random.Random) -> str:
    def item() -> str:
        if r.random() < 0.15:
            return "NULL"
        s = gen_text(r, 12)
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "{" + ",".join(item() for _ in range(r.randint(0, 4))) + "}"


def _interval(r: random.Random) -> str:
    return (
        f"{r.randint(-100, 100)} years {r.randint(-11, 11)} mons {r.randint(-40, 40)} days "
        f"{r.randint(0, 99)}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}.{r.randint(0, 999999):06d}"
    )


# fmt: off
# Kept as a table (one type per entry). Edge values are tried 40% of the time, random ones otherwise.
T = FuzzType
TYPES: tuple[FuzzType, ...] = (
    T("int", "integer", "integer", edge=("0", "-1", "2147483647", "-2147483648"),
      gen=_int(-(2**31), 2**31 - 1), bulk="(g % 100000)::int", canon=canon_int),
    T("bigint", "bigint", "bigint", edge=("9223372036854775807", "-9223372036854775808", "0"),
      gen=_int(-(2**63), 2**63 - 1), bulk="g * 1000003", canon=canon_int),
    T("smallint", "smallint", "smallint", edge=("32767", "-32768", "0"),
      gen=_int(-32768, 32767), bulk="(g % 30000)::smallint", canon=canon_int),
    T("numeric12", "numeric(12,2)", "numeric(12,2)",
      edge=("0.00", "-9999999999.99", "9999999999.99", "0.01", "-0.01"),
      gen=lambda r: f"{r.randint(-(10**12) + 1, 10**12 - 1) / 100:.2f}", bulk="(g / 7.0)::numeric(12,2)",
      canon=canon_decimal),
    # Unbounded numeric: exact on PostgreSQL; text elsewhere (DECIMAL(38,10) would round it and refuse NaN),
    # as replicator/sources/postgres.py documents. Not added mid-stream: the OID says numeric, not text.
    T("numeric", "numeric", "numeric",
      edge=("NaN", "Infinity", "-Infinity", "0", "-0.000001", "1" + "0" * 39, "-" + "9" * 45 + ".5",
            "0." + "0" * 30 + "17", "12345678901234567890.123456789012345"),
      gen=_decimal, bulk="(g::numeric * 12345678901234567890.123456789)", canon=canon_decimal,
      schema_for={"duckdb": "text", "redshift": "text"}, addable=False),
    T("double", "double precision", "double",
      edge=("NaN", "Infinity", "-Infinity", "0", "-0", "1.7976931348623157e308", "5e-324", "0.1",
            "2.2250738585072014e-308"),
      gen=lambda r: repr(r.uniform(-1e300, 1e300) if r.random() < 0.3 else r.uniform(-1e6, 1e6)),
      bulk="(g / 3.0)::float8", canon=canon_float),
    T("real", "real", "real", edge=("NaN", "Infinity", "-Infinity", "0", "3.4028235e38", "1e-45"),
      gen=lambda r: repr(r.uniform(-1e30, 1e30)), bulk="(g / 3.0)::float4", canon=canon_real),
    T("text", "text", "text", edge=TEXT_EDGE, gen=gen_text, bulk="'r' || g || repeat('é', (g % 5)::int)"),
    T("varchar", "varchar(40)", "varchar(40)", edge=("", "x" * 40, "ü" * 40, "👍" * 40),
      gen=lambda r: gen_text(r, 40)[:40], bulk="'v' || g"),
    T("bool", "boolean", "boolean", edge=("t", "f"), gen=lambda r: r.choice(["true", "false"]),
      bulk="g % 2 = 0", canon=canon_bool),
    T("date", "date", "date", edge=("0001-01-01", "9999-12-31", "2024-02-29", "1970-01-01", "2000-01-01"),
      gen=_date, bulk="date '2000-01-01' + (g % 100000)::int", canon=canon_date),
    T("timestamp", "timestamp", "timestamp",
      edge=("0001-01-01 00:00:00", "9999-12-31 23:59:59.999999", "2024-02-29 12:00:00.000001",
            "1970-01-01 00:00:00"),
      gen=_ts, bulk="timestamp '2000-01-01' + g * interval '1 second'", canon=canon_timestamp),
    T("timestamptz", "timestamptz", "timestamptz",
      edge=("0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00", "2024-02-29 23:59:59.123456+05",
            "1999-12-31 23:00:00-00:30"),
      gen=_tstz, bulk="timestamptz '2000-01-01 00:00+00' + g * interval '1 minute'", canon=canon_timestamptz),
    T("bytea", "bytea", "bytea", edge=("\\x", "\\x00", "\\x00ff41", "\\x" + "ab" * 500),
      gen=lambda r: "\\x" + r.randbytes(r.randint(0, 40)).hex(), bulk="decode(md5(g::text), 'hex')",
      canon=canon_hex, read={"pg": "encode({c}, 'hex')", "duckdb": "lower(hex({c}))"}),
    T("json", "json", "json",
      edge=("{}", "[]", "null", '"s"', '{"k": [1, 2.50, "x"], "a": {"b": null}}', '{"a":1,"a":2}',
            '"\\u00e9\\ud83d\\ude00"', "[[[[]]]]"),
      gen=gen_json, bulk="json_build_object('g', g, 's', 'x' || g)", canon=canon_json),
    T("jsonb", "jsonb", "json",
      edge=("{}", "[]", "null", "0", '{"b": 1, "a": null}', '{"e": 1.0e2, "x": -0.0}',
            '"👩\u200d👩\u200d👧"'),
      gen=gen_json, bulk="jsonb_build_object('g', g, 'l', jsonb_build_array(g, g * 2))", canon=canon_json),
    T("uuid", "uuid", "uuid",
      edge=("00000000-0000-0000-0000-000000000000", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "ffffffff-ffff-ffff-ffff-ffffffffffff"),
      gen=lambda r: str(uuid.UUID(int=r.getrandbits(128))), bulk="md5(g::text)::uuid", canon=canon_lower),
    # Arrays and interval: text in every target, in PostgreSQL's text form.
    T("int_array", "integer[]", "text", edge=("{}", "{NULL}", "{1,2,NULL}", "{{1,2},{3,4}}", "{{{1}}}"),
      gen=_int_array, bulk="ARRAY[g::int, (g % 7)::int]"),
    T("text_array", "text[]", "text", edge=("{}", '{""}', '{"a b","c,d",NULL,"q\\"t"}', '{{"x","y"}}'),
      gen=_text_array, bulk="ARRAY['a' || g, NULL]"),
    T("interval", "interval", "text",
      edge=("0", "-00:00:01", "1 year 2 mons 3 days 04:05:06.789", "178000000 years", "-178000000 years"),
      gen=_interval, bulk="g * interval '1 minute'"),
)

# Generated only when named (--types): defect 2's types join TYPES once they round-trip.
EXTRA_TYPES: tuple[FuzzType, ...] = (
    T("date_extremes", "date", "date", edge=("infinity", "-infinity", "4713-01-01 BC", "5874897-12-31"),
      gen=lambda r: r.choice(["infinity", "-infinity", "0044-03-15 BC"]), bulk="date '2000-01-01'",
      canon=canon_date),
)
# fmt: on

BY_NAME = {t.name: t for t in (*TYPES, *EXTRA_TYPES)}
