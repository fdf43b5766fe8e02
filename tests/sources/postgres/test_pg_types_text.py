"""Wire text -> Arrow for the forms PostgreSQL writes, checked against independent references.

Dates are compared with Python's own calendar (shifted by whole 400-year Gregorian cycles for years it
does not hold), times with plain arithmetic; rendering back for the PostgreSQL target must give the same
value. The first bad value of a column is named by its row, which is what the stage relies on.
"""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.schema import typed_column
from replicator.sources.postgres.rows import column_type
from replicator.values import KINDS, LogicalType, parse_type, temporal, text_to_arrow

CYCLE_DAYS, CYCLE_YEARS = 146_097, 400  # the Gregorian calendar repeats every 400 years
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def reference_days(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 by Python's calendar; ``year`` astronomical (0 = 1 BC)."""
    cycles = (year - 2000) // CYCLE_YEARS
    same = dt.date(year - cycles * CYCLE_YEARS, month, day)  # a year in 2000..2399 with the same calendar
    return same.toordinal() - EPOCH_ORDINAL + cycles * CYCLE_DAYS


def pg_date(year: int, month: int, day: int) -> str:
    """How PostgreSQL writes a date (DateStyle ISO)."""
    shown = 1 - year if year <= 0 else year
    return f"{shown:04d}-{month:02d}-{day:02d}" + (" BC" if year <= 0 else "")


def pg_clock(us: int) -> str:
    """How PostgreSQL writes a time of day: trailing zeros of the fraction dropped."""
    seconds, fraction = divmod(us, 1_000_000)
    text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text + (f".{fraction:06d}".rstrip("0") if fraction else "")


@st.composite
def dates(draw: st.DrawFn) -> tuple[int, int, int]:
    year = draw(st.integers(-4713, 5_874_897))  # PostgreSQL's date range (4714 BC .. 5874897 AD)
    month = draw(st.integers(1, 12))
    last = (dt.date(2000 + (year % 400), month % 12 + 1, 1) - dt.timedelta(days=1)).day if month < 12 else 31
    return year, month, draw(st.integers(1, last))


@settings(max_examples=300, deadline=None)
@given(st.lists(dates(), min_size=1, max_size=20))
def test_postgresql_dates_of_any_year_read_as_the_calendar_says_and_render_back(
    values: list[tuple[int, int, int]],
) -> None:
    text = [pg_date(*v) for v in values]
    assert all(re.match(temporal.DATE_SHAPE, v) for v in text)
    days = text_to_arrow(text, LogicalType("date"))
    assert days.cast(pa.int32()).to_pylist() == [reference_days(*v) for v in values]
    rendered = temporal.postgres_text(days)
    again = text_to_arrow(rendered if rendered is not None else days.cast(pa.string()), LogicalType("date"))
    assert again.equals(days)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(dates().filter(lambda v: v[0] < 294_247), min_size=1, max_size=20),
    st.integers(0, 86_400_000_000 - 1),
    st.sampled_from(["", "+00", "-05:30", "+14", "+00:09:21"]),
)
def test_postgresql_timestamps_read_to_the_microsecond_with_their_offset_and_render_back(
    values: list[tuple[int, int, int]], us: int, offset: str
) -> None:
    zoned = bool(offset)
    text = [
        f"{pg_date(y, m, d).removesuffix(' BC')} {pg_clock(us)}{offset}" + (" BC" if y <= 0 else "")
        for y, m, d in values
    ]
    shift = 0
    if offset:
        sign = -1 if offset[0] == "-" else 1
        parts = [int(p) for p in offset[1:].split(":")] + [0, 0]
        shift = sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]) * 1_000_000
    want = [reference_days(*v) * 86_400_000_000 + us - shift for v in values]
    kind = LogicalType("timestamptz" if zoned else "timestamp")
    assert all(re.match(temporal.TIMESTAMP_SHAPE, v) for v in text)
    got = text_to_arrow(text, kind)
    assert got.cast(pa.int64()).to_pylist() == want
    rendered = temporal.postgres_text(got)
    if rendered is not None:
        assert text_to_arrow(rendered, kind).equals(got)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 86_400_000_000) | st.none(), min_size=1, max_size=30))
def test_times_of_day_read_to_the_microsecond_up_to_and_including_24_00_00(values: list[int | None]) -> None:
    text = [None if v is None else pg_clock(v) for v in values]
    assert all(re.match(temporal.TIME_SHAPE, v) for v in text if v is not None)
    got = text_to_arrow(text, LogicalType("time"))
    assert got.cast(pa.int64()).to_pylist() == values
    rendered = temporal.postgres_text(got)
    shown = rendered if rendered is not None else got.cast(pa.string())
    assert text_to_arrow(shown, LogicalType("time")).equals(got)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["time", "date", "timestamp", "timestamptz", "integer", "oid", "boolean"]),
    st.integers(0, 30),
    st.integers(0, 5),
    st.sampled_from(["x", "25:00:00", "2024-13-01", "12:60:00", "0000-01-01 BC", "-1", "4294967296"]),
)
def test_the_first_value_that_does_not_parse_is_named_by_its_row(
    kind: str, good: int, after: int, bad: str
) -> None:
    valid = {"time": "24:00:00", "date": "0044-03-15 BC", "timestamp": "infinity", "oid": "4294967295",
             "timestamptz": "2024-01-01 00:00:00+00:09:21", "integer": "-7", "boolean": "t"}  # fmt: skip
    t = LogicalType(kind)
    try:
        text_to_arrow([bad], t)
    except ValueError:
        pass
    else:
        return  # that "bad" value is a valid one of this type
    column = [valid[kind]] * good + [bad] + [None, bad] * after
    with pytest.raises(ValueError, match=rf"^row {good}: "):
        text_to_arrow(column, t)


@pytest.mark.parametrize(
    ("kind", "values", "bad"),
    [
        ("date", ["infinity", "0044-03-15 BC", "x", "5874897-12-31", "-infinity"], [2]),
        ("time", ["24:00:00", "25:00:00", "00:00:00.000001"], [1]),
        ("timestamptz", ["1900-01-01 00:00:00+00:09:21", "y", "-infinity", "0044-03-15 10:00:00+00 BC"], [1]),
        ("timestamp", ["infinity", "10000-01-01 00:00:00.5", "2024-02-30 00:00:00"], [2]),
    ],
)
def test_the_stage_sets_aside_only_the_bad_values_beside_postgresql_edge_values(
    kind: str, values: list[str], bad: list[int]
) -> None:
    """The stage looks for bad values in bulk by their shape first: PostgreSQL's own forms must pass it."""
    assert typed_column(pa.array(values), LogicalType(kind))[1] == bad


@st.composite
def logical_types(draw: st.DrawFn) -> LogicalType:
    kind = draw(st.sampled_from(sorted(KINDS)))
    base = kind.removesuffix("[]")  # bit always has a length: a bare "bit" is SQL Server's boolean
    if base in ("varchar", "char", "bit", "varbit") and (base == "bit" or draw(st.booleans())):
        return LogicalType(kind, length=draw(st.integers(1, 10_000)))
    if base == "numeric" and draw(st.booleans()):
        p = draw(st.integers(1, 38))
        return LogicalType(kind, precision=p, scale=draw(st.integers(0, p)))
    return LogicalType(kind)


@settings(max_examples=300, deadline=None)
@given(logical_types())
def test_every_type_names_itself_in_a_form_that_parses_back_to_it(t: LogicalType) -> None:
    assert parse_type(str(t)) == t


@pytest.mark.parametrize(
    ("declared", "canonical"),
    [
        ("bit", "boolean"),  # SQL Server's bit; PostgreSQL's bit string is declared with its length
        ("bit(1)", "bit(1)"),
        ("bit varying", "varbit"),
        ("time with time zone", "timetz"),
        ("timestamp(3) with time zone", "timestamptz"),
        ("interval day to second(2)", "interval"),
        ("citext", "text"),
        ("name", "text"),
        ("int4 array", "integer[]"),
        ("character(4)[][]", "char(4)[]"),
        ("serial", "integer"),
    ],
)
def test_postgresql_spellings_parse_to_their_canonical_type(declared: str, canonical: str) -> None:
    assert str(parse_type(declared)) == canonical


@pytest.mark.parametrize("declared", ["mood", "geometry", "bit(0)", "time(7)", "hstore[]", "numeric(39)"])
def test_a_type_the_catalog_does_not_know_is_refused_with_what_to_declare(declared: str) -> None:
    with pytest.raises(
        ValueError, match=declared.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        parse_type(declared)


def test_relation_message_type_oids_name_the_same_types_as_the_schema_files() -> None:
    assert column_type(1083, -1) == parse_type("time")
    assert column_type(1560, 3) == parse_type("bit(3)")
    assert column_type(1561, 4) == parse_type("bit(4)[]")
    assert column_type(1231, ((10 << 16) | 2) + 4) == parse_type("numeric(10,2)[]")
    assert column_type(1014, 8) == parse_type("char(4)[]")
    assert column_type(4535, -1) == parse_type("datemultirange")
    assert column_type(19, -1) == parse_type("name")
    assert column_type(99999, -1) == parse_type("text")  # an enum, a domain, an extension's type
