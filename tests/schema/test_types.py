from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from replicator.values import parse_type, text_to_arrow


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bigint", "bigint"),
        ("int8", "bigint"),
        ("numeric(12, 2)", "numeric(12,2)"),
        ("varchar(80)", "varchar(80)"),
        ("character varying(5)", "varchar(5)"),
        ("timestamp with time zone", "timestamptz"),
        ("jsonb", "json"),
        ("numeric", "numeric"),
        ("nvarchar(max)", "varchar"),
    ],
)
def test_type_names_parse_to_canonical_form(text: str, expected: str) -> None:
    assert str(parse_type(text)) == expected


def test_unknown_type_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="geometry"):
        parse_type("geometry")


def test_wire_text_converts_in_bulk() -> None:
    assert text_to_arrow(["1", None, "-7"], parse_type("bigint")).to_pylist() == [1, None, -7]
    assert text_to_arrow(["t", "false", "1", None], parse_type("boolean")).to_pylist() == [
        True,
        False,
        True,
        None,
    ]
    assert text_to_arrow(["12.50", "-0.01"], parse_type("numeric(12,2)")).to_pylist() == [
        Decimal("12.50"),
        Decimal("-0.01"),
    ]
    assert text_to_arrow(["2024-02-29"], parse_type("date")).to_pylist() == [dt.date(2024, 2, 29)]
    # SQL Server's 7 fractional digits are cut to microseconds, PostgreSQL's "+00" offset is understood.
    assert text_to_arrow(["2024-01-02 03:04:05.1234567"], parse_type("timestamp")).to_pylist() == [
        dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    ]
    (ts,) = text_to_arrow(["2024-01-02 03:04:05+02"], parse_type("timestamptz")).to_pylist()
    assert ts == dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.UTC)
    assert text_to_arrow(["\\x00ff"], parse_type("bytea")).to_pylist() == [b"\x00\xff"]


def test_the_first_bad_value_is_named_by_row() -> None:
    with pytest.raises(ValueError, match=r"row 2: 'x1' is not a valid integer"):
        text_to_arrow(["1", None, "x1", "y"], parse_type("integer"))
    with pytest.raises(ValueError, match=r"row 1: 'maybe' is not a valid boolean"):
        text_to_arrow(["t", "maybe"], parse_type("boolean"))
