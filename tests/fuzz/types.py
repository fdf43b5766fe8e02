"""The column types the fuzzer writes, as a table: one ``FuzzType`` per source type.

Each entry says how the column is declared at the source and in the schema file (which may depend on the
target: an unbounded ``numeric`` is declared ``text`` where the warehouse has no exact type for it, as
``replicator/sources/postgres/source.py`` documents), which values to write (edge values first, then
random ones), what server-side expression fills it in bulk, and how a value read back is brought to one
canonical form.

Values are PostgreSQL input text (or None for NULL), sent as untyped literals, so PostgreSQL converts them
to the column's type exactly as a client's INSERT would. Every side is read as text (``read``) and then
canonicalised (``canon``): the text forms differ between engines (DuckDB prints ``inf``, PostgreSQL
``Infinity``), the values must not.

The table of types itself is ``tests.fuzz.type_table``.
"""

from __future__ import annotations

import json
import random
import re
import struct
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
    as text, ``read`` the expression that reads column ``{c}`` as text on an engine (``pg`` or ``duckdb``),
    ``added_as`` the type a column added mid-stream is drawn as instead, per target, where the type the
    replicator gives it (from the OID) does not hold every value of this one there (``{"redshift":
    "date_rs"}``: no infinity): a column there from the start is declared ``schema_type`` instead."""

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
    added_as: dict[str, str] = field(default_factory=dict)

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


_BC = re.compile(
    r"\s*\(?BC\)?"
)  # PostgreSQL: "0044-03-15 10:00:00+00 BC"; DuckDB: "0044-03-15 (BC) 10:00:00"


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


def gen_int(lo: int, hi: int) -> Gen:
    return lambda r: str(r.randint(lo, hi))


def gen_decimal(r: random.Random) -> str:
    whole = r.randint(0, 10 ** r.randint(1, 45))
    frac = str(r.randint(0, 10 ** r.randint(0, 20)))
    return f"{r.choice(['', '-'])}{whole}.{frac}"


def gen_date(r: random.Random) -> str:
    return f"{r.randint(1, 9999):04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def gen_ts(r: random.Random) -> str:
    h, m, s, us = r.randint(0, 23), r.randint(0, 59), r.randint(0, 59), r.randint(0, 999999)
    return f"{gen_date(r)} {h:02d}:{m:02d}:{s:02d}.{us:06d}"


def gen_tstz(r: random.Random) -> str:
    return f"{gen_ts(r)}{r.choice(['+00', '-08', '+05:30', '+14', '-12:45'])}"


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


def gen_int_array(r: random.Random) -> str:
    if r.random() < 0.3:  # nested: PostgreSQL arrays are rectangular
        n = r.randint(1, 3)
        rows = [",".join(str(r.randint(-99, 99)) for _ in range(n)) for _ in range(r.randint(1, 3))]
        return "{" + ",".join("{" + x + "}" for x in rows) + "}"
    return (
        "{"
        + ",".join(r.choice([str(r.randint(-(2**31), 2**31 - 1)), "NULL"]) for _ in range(r.randint(0, 5)))
        + "}"
    )


def gen_text_array(r: random.Random) -> str:
    def item() -> str:
        if r.random() < 0.15:
            return "NULL"
        s = gen_text(r, 12)
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "{" + ",".join(item() for _ in range(r.randint(0, 4))) + "}"


def gen_interval(r: random.Random) -> str:
    return (
        f"{r.randint(-100, 100)} years {r.randint(-11, 11)} mons {r.randint(-40, 40)} days "
        f"{r.randint(0, 99)}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}.{r.randint(0, 999999):06d}"
    )
