"""Column kinds of the DMS fuzzer: edge values to write, bad values to write, and the reference's parsers.

The parsers are the reference's own reading of each SQL Server type as DMS writes it (strict: only the
forms DMS writes are good), written without the replicator's code. Generated bad values are bad by any
reading (``12x`` for a bigint, ``2023-02-29`` for a date), so the reference and the replicator must agree
on which rows to quarantine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# Text that has broken CSV writers and readers: delimiters, quotes, row breaks, the null markers as text,
# whitespace, combining marks, right-to-left text, a ZWJ emoji sequence, astral characters.
EDGE_TEXT = (
    "",
    " ",
    "NULL",
    "null",
    "\\N",
    "a,b",
    "a|b",
    'say "hi"',
    '"',
    '""',
    "line\nbreak",
    "cr\r\nlf",
    "trailing\n",
    " padded ",
    "tab\there",
    "e\u0301t\u00e9",
    "\u0645\u0631\u062d\u0628\u0627",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\u4e2d\u6587\U00020000",
    "back\\slash",
    "semi;colon",
    "x" * 300,
)


def _bigint(text: str) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"not an integer: {text!r}")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"out of the bigint range: {text!r}")
    return value


def _numeric(precision: int, scale: int) -> Callable[[str], Decimal]:
    def parse(text: str) -> Decimal:
        m = re.fullmatch(r"\s*[+-]?(\d*)(?:\.(\d*))?\s*", text)
        if not m or not (m.group(1) or m.group(2)):
            raise ValueError(f"not a number: {text!r}")
        whole, frac = m.group(1).lstrip("0"), m.group(2) or ""
        if len(whole) > precision - scale or len(frac.rstrip("0")) > scale:
            raise ValueError(f"does not fit numeric({precision},{scale}): {text!r}")
        try:
            return Decimal(text.strip())
        except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
            raise ValueError(str(exc)) from None

    return parse


def _date(text: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"not a date: {text!r}")
    return date.fromisoformat(text)


def _timestamp(text: str) -> datetime:
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?", text)
    if not m:
        raise ValueError(f"not a datetime2: {text!r}")
    micro = int(((m.group(5) or "") + "000000")[:6])  # datetime2 has 7 digits: the 7th is cut, not rounded
    day = date.fromisoformat(m.group(1))
    return datetime(day.year, day.month, day.day, int(m.group(2)), int(m.group(3)), int(m.group(4)), micro)


def _bit(text: str) -> bool:
    folded = text.strip().lower()
    if folded in ("1", "true"):
        return True
    if folded in ("0", "false"):
        return False
    raise ValueError(f"not a bit: {text!r}")


def _text(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class Kind:
    """One column type: its spelling in a schema file, its parser, and how to make values of it."""

    name: str  # as in schemas/tables/*.toml
    parse: Callable[[str], Any]
    good: Callable[[random.Random], str]
    bad: tuple[str, ...]  # texts that are not values of the type (empty: every text is a value)
    parquet: str  # the Arrow type DMS writes it as in Parquet: int64, decimal, date, timestamp, bool, string


def _good_bigint(rnd: random.Random) -> str:
    return str(rnd.choice([0, -1, 1, 2**63 - 1, -(2**63), rnd.randint(-(10**12), 10**12)]))


def _good_numeric(rnd: random.Random) -> str:
    whole = rnd.choice(["0", "1", "-1", "9" * 28, "-" + "9" * 28, str(rnd.randint(0, 10**15))])
    frac = rnd.choice(["", "0000000001", "5", "9999999999", str(rnd.randint(0, 9999))])
    return f"{whole}.{frac}" if frac else whole


def _good_date(rnd: random.Random) -> str:
    return rnd.choice(
        ["0001-01-01", "9999-12-31", "2024-02-29", "1970-01-01", f"20{rnd.randint(10, 30)}-07-15"]
    )


def _good_timestamp(rnd: random.Random) -> str:
    return rnd.choice(
        [
            "0001-01-01 00:00:00",
            "9999-12-31 23:59:59.9999999",
            "2024-02-29 12:00:00.1234567",
            "1970-01-01 00:00:00.0000001",
            f"2024-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)} 0{rnd.randint(0, 9)}:30:00.500000",
        ]
    )


def _good_text(rnd: random.Random) -> str:
    return rnd.choice(EDGE_TEXT) if rnd.random() < 0.6 else f"v{rnd.randint(0, 999)}"


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("bigint", _bigint, _good_bigint, ("12x", "1.5", "", "9223372036854775808", "1e3"), "int64"),
        Kind(
            "numeric(38,10)",
            _numeric(38, 10),
            _good_numeric,
            ("abc", "1.2.3", "", "1" * 29, "1.12345678901"),
            "decimal",
        ),
        Kind("date", _date, _good_date, ("2023-02-29", "31/01/2024", "", "2024-13-01"), "date"),
        Kind(
            "datetime2",
            _timestamp,
            _good_timestamp,
            ("2024-01-01 25:00:00", "2024-02-30 00:00:00", "yesterday", ""),
            "timestamp",
        ),
        Kind("bit", _bit, lambda rnd: rnd.choice(["1", "0"]), ("2", "maybe", ""), "bool"),
        Kind("nvarchar(400)", _text, _good_text, (), "string"),
        Kind("text", _text, _good_text, (), "string"),
    )
}
