"""Date and time wire text <-> Arrow, including the forms Arrow's own casts neither read nor write.

PostgreSQL writes values that Arrow's string casts refuse: ``infinity`` and ``-infinity`` (date, timestamp,
timestamptz), years before 1 AD (``0044-03-15 BC``, proleptic Gregorian, astronomical year 1 - 44) and
after 9999 (``10000-01-01``), ``24:00:00`` (time), and UTC offsets with seconds (``+00:09:21``: a historical
local mean time when the session's TimeZone is not UTC). Arrow has no string -> time cast at all here.

Storage (what the staged Parquet holds):

- an infinity is the value DuckDB itself reads as infinity from Parquet: dates +-(2^31 - 1) days,
  timestamps +-(2^63 - 1) microseconds;
- ``24:00:00`` is 86,400,000,000 microseconds (DuckDB reads it as ``24:00:00``);
- BC and five-digit years are ordinary day / microsecond counts from 1970-01-01.

Timestamps must fit int64 microseconds from 1970: PostgreSQL's last ~30 years (after 294247-01-10
04:00:54.775806 AD) do not, and are refused like any value that does not parse.

``outside`` finds the values of a column that a target with a narrower range cannot hold (Redshift's DATE
and TIMESTAMP: 4713 BC to 294276 AD, no infinity).

Values of the usual shape are cast by Arrow in bulk; only the rows in one of the forms above go through
Python (``_civil``), so a column without them costs one Arrow cast.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

DATE_INFINITY = 2**31 - 1  # days; -DATE_INFINITY is -infinity
TIMESTAMP_INFINITY = 2**63 - 1  # microseconds; -TIMESTAMP_INFINITY is -infinity
DAY_US = 86_400_000_000
_FIRST_AD_DAY = -719_162  # 0001-01-01 in days from 1970-01-01: Arrow writes years before it as "-0043"
_Y10K_DAY = 2_932_897  # 10000-01-01: Arrow's formatting gives up some way after it
_US = 1_000_000

# What every text these parsers accept looks like (a value without it is bad for sure): for callers that
# set bad values aside in bulk before casting (``replicator.schema.convert``).
TIME_SHAPE = r"^\s*\d{1,2}:\d\d(:\d\d(\.\d+)?)?\s*$"
DATE_SHAPE = r"(?i)^\s*([+-]?infinity|\d{4,}-\d\d-\d\d(\s+BC)?)\s*$"
TIMESTAMP_SHAPE = (
    r"(?i)^\s*([+-]?infinity|\d{4,}-\d\d-\d\d([ T]\d\d:\d\d(:\d\d(\.\d+)?)?)?"
    r"\s*([+-]\d\d(:?\d\d(:?\d\d)?)?|Z)?(\s+BC)?)\s*$"
)

_TIME_RE = r"^\s*(?P<h>\d{1,2}):(?P<m>\d\d)(?::(?P<s>\d\d)(?:\.(?P<f>\d{1,9}))?)?\s*$"
# Rows Arrow's casts cannot read, handled by ``_civil``; every other row goes to Arrow.
_SPECIAL_RE = r"(?i)infinity|\sBC\s*$|^\s*\d{5,}-|[+-]\d\d:?\d\d:?\d\d\s*$"
_CIVIL = re.compile(
    r"^\s*(?P<y>\d{4,})-(?P<mo>\d\d)-(?P<d>\d\d)"
    r"(?:[ T](?P<h>\d\d):(?P<mi>\d\d)(?::(?P<s>\d\d)(?:\.(?P<f>\d{1,9}))?)?)?"
    r"\s*(?:(?P<sign>[+-])(?P<oh>\d\d)(?::?(?P<om>\d\d)(?::?(?P<os>\d\d))?)?|(?P<z>Z))?"
    r"(?P<bc>\s+BC)?\s*$",
    re.IGNORECASE,
)


def parse_time(text: pa.Array) -> pa.Array:
    """``HH:MM[:SS[.fraction]]`` -> time64[us]; ``24:00:00`` is accepted (PostgreSQL's end of day).
    Digits beyond microseconds are cut (SQL Server sends seven). Raises ValueError if any value is bad."""
    parts = pc.extract_regex(text, pattern=_TIME_RE)
    if pc.any(pc.and_(pc.is_valid(text), pc.is_null(parts))).as_py():
        raise ValueError("not a time of day (HH:MM:SS[.ffffff])")

    def field(name: str) -> pa.Array:
        digits = pc.struct_field(parts, name)
        return pc.cast(pc.if_else(pc.equal(digits, ""), "0", digits), pa.int64())

    h, m, s = field("h"), field("m"), field("s")
    fraction = pc.utf8_slice_codeunits(pc.struct_field(parts, "f"), 0, 6)
    us = pc.cast(pc.utf8_rpad(fraction, 6, "0"), pa.int64())
    total = pc.add(pc.multiply(pc.add(pc.multiply(pc.add(pc.multiply(h, 60), m), 60), s), _US), us)
    bad = pc.or_(pc.or_(pc.greater(m, 59), pc.greater(s, 59)), pc.greater(total, DAY_US))
    if pc.any(bad).as_py():
        raise ValueError("time of day out of range (00:00:00 .. 24:00:00)")
    return pc.if_else(pc.is_valid(text), total, None).cast(pa.time64("us"))


def parse_date(text: pa.Array) -> pa.Array:
    """Date text -> date32, with infinities, BC and five-digit years. Raises on any bad value."""
    return _with_specials(text, pa.date32(), lambda t: pc.cast(t, pa.date32()), _date_value)


def parse_timestamp(text: pa.Array, *, zoned: bool) -> pa.Array:
    """Timestamp text -> timestamp[us] (``zoned``: with a UTC offset -> timestamp[us, UTC]). Raises on any
    bad value."""
    target = pa.timestamp("us", tz="UTC") if zoned else pa.timestamp("us")

    def bulk(t: pa.Array) -> pa.Array:
        # Most columns cast as they are; the regular expressions cost more than the cast (a third of a DMS
        # batch's timestamp column), so they run only when the plain cast fails. Where the plain cast
        # succeeds it gives what the normalised text gives (tests/values/test_temporal_fast.py).
        try:
            return pc.cast(t, target)
        except pa.ArrowInvalid:
            return pc.cast(normalised_timestamps(t, zoned=zoned), target)

    return _with_specials(text, target, bulk, lambda v: _timestamp_value(v, zoned=zoned))


def normalised_timestamps(text: pa.Array, *, zoned: bool) -> pa.Array:
    """Timestamp text in the forms Arrow's cast reads: SQL Server writes 7 fractional digits, PostgreSQL
    "+00" offsets; Arrow wants at most 6 digits for microseconds and "+00:00"."""
    text = pc.replace_substring_regex(text, pattern=r"(\.\d{6})\d+", replacement=r"\1")
    if zoned:
        text = pc.replace_substring_regex(text, pattern=r"([+-]\d\d)$", replacement=r"\1:00")
        text = pc.replace_substring_regex(text, pattern=r" ?Z$", replacement="+00:00")
    return text


def _with_specials(text: pa.Array, target: pa.DataType, bulk: object, one: object) -> pa.Array:
    assert callable(bulk) and callable(one)
    try:
        result: pa.Array = bulk(text)
        return result
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        first_error = exc
    special = pc.fill_null(pc.match_substring_regex(text, pattern=_SPECIAL_RE), False)
    if not pc.any(special).as_py():
        raise ValueError(str(first_error)) from None
    usual = bulk(pc.if_else(special, pa.scalar(None, pa.string()), text))
    values = [one(v) for v in text.filter(special).to_pylist()]
    storage = pa.int32() if pa.types.is_date32(target) else pa.int64()
    return pc.replace_with_mask(usual, special, pa.array(values, storage).cast(target))


def _date_value(text: str) -> int:
    inf = _infinity(text, DATE_INFINITY)
    if inf is not None:
        return inf
    m = _CIVIL.match(text)
    if m is None or m["h"] is not None or m["sign"] is not None or m["z"] is not None:
        raise ValueError(f"not a date: {text[:40]!r}")
    return _days(m)


def _timestamp_value(text: str, *, zoned: bool) -> int:
    inf = _infinity(text, TIMESTAMP_INFINITY)
    if inf is not None:
        return inf
    m = _CIVIL.match(text)
    if m is None or zoned != (m["sign"] is not None or m["z"] is not None):
        raise ValueError(f"not a timestamp{' with a UTC offset' if zoned else ''}: {text[:40]!r}")
    h, mi, s = (int(m[k] or 0) for k in ("h", "mi", "s"))
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"time of day out of range in {text[:40]!r}")
    us = int((m["f"] or "")[:6].ljust(6, "0"))
    offset = 0
    if m["sign"] is not None:
        offset = (int(m["oh"]) * 3600 + int(m["om"] or 0) * 60 + int(m["os"] or 0)) * (
            -1 if m["sign"] == "-" else 1
        )
    value = ((_days(m) * 86400 + h * 3600 + mi * 60 + s - offset) * _US) + us
    if not -TIMESTAMP_INFINITY < value < TIMESTAMP_INFINITY:
        raise ValueError(f"{text[:40]!r} is beyond the microsecond range of 64 bits from 1970")
    return value


def _infinity(text: str, big: int) -> int | None:
    word = text.strip().lower()
    if word in ("infinity", "+infinity"):
        return big
    if word == "-infinity":
        return -big
    return None


def _days(m: re.Match[str]) -> int:
    year, month, day = int(m["y"]), int(m["mo"]), int(m["d"])
    if m["bc"]:
        if year == 0:
            raise ValueError("there is no year 0 BC")
        year = 1 - year  # astronomical numbering: 1 BC is year 0
    if not 1 <= month <= 12 or not 1 <= day <= _month_days(year, month):
        raise ValueError(f"no such date: {m.group(0).strip()[:40]!r}")
    days = days_from_civil(year, month, day)
    if not -DATE_INFINITY < days < DATE_INFINITY:
        raise ValueError(f"{m.group(0).strip()[:40]!r} is beyond the date range")
    return days


def _month_days(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (astronomical year: 0 is 1 BC)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The inverse of ``days_from_civil``: (astronomical year, month, day)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


# -- range checks -----------------------------------------------------------------------------------------


def outside(column: pa.Array, first_day: int, last_day: int) -> tuple[int, str] | None:
    """For a date32 or timestamp[us] column: how many of its values lie outside the days ``first_day`` ..
    ``last_day`` (from 1970-01-01; a timestamp counts by its UTC day, an infinity is always outside), and
    the first of them as PostgreSQL text (``infinity``, ``0044-03-15 BC``); None when every value is
    inside, or for any other type. For targets whose types hold less than the stage does (Redshift)."""
    t = column.type
    if pa.types.is_date32(t):
        ints = column.cast(pa.int32())
        lo, hi = first_day, last_day
    elif pa.types.is_timestamp(t) and t.unit == "us":
        ints = column.cast(pa.int64())
        lo = max(first_day * DAY_US, -TIMESTAMP_INFINITY + 1)
        hi = min((last_day + 1) * DAY_US - 1, TIMESTAMP_INFINITY - 1)
    else:
        return None
    if len(ints) == ints.null_count:
        return None
    bounds = pc.min_max(ints)
    if bounds["min"].as_py() >= lo and bounds["max"].as_py() <= hi:
        return None
    bad = pc.fill_null(pc.or_(pc.less(ints, lo), pc.greater(ints, hi)), False)
    first = ints.filter(bad)[0].as_py()
    zone = "+00" if pa.types.is_timestamp(t) and t.tz is not None else ""
    text = _date_text(first) if pa.types.is_date32(t) else _timestamp_text(first, zone)
    return int(pc.sum(bad.cast(pa.int64())).as_py()), text


# -- Arrow -> PostgreSQL input text ------------------------------------------------------------------------


def postgres_text(column: pa.Array) -> pa.Array | None:
    """A date, time or timestamp column as text PostgreSQL reads, when it holds a value Arrow would write
    in a form PostgreSQL does not (an infinity, a BC year as ``-0043``, a year past 9999, time
    ``24:00:00``); ``None`` when Arrow's own rendering is fine (the usual case)."""
    t = column.type
    if pa.types.is_time64(t):
        ints = column.cast(pa.int64())
        end = pc.fill_null(pc.equal(ints, DAY_US), False)
        if not pc.any(end).as_py():
            return None
        usual = pc.cast(pc.if_else(end, pa.scalar(0, pa.int64()), ints).cast(t), pa.string())
        return pc.if_else(end, "24:00:00", usual)
    if pa.types.is_date32(t):
        ints = column.cast(pa.int32())
        special = pc.fill_null(pc.or_(pc.less(ints, _FIRST_AD_DAY), pc.greater_equal(ints, _Y10K_DAY)), False)
        return _render(column, ints, special, _date_text)
    if pa.types.is_timestamp(t) and t.unit == "us":
        ints = column.cast(pa.int64())
        first, last = _FIRST_AD_DAY * 86400 * _US, _Y10K_DAY * 86400 * _US
        special = pc.fill_null(pc.or_(pc.less(ints, first), pc.greater_equal(ints, last)), False)
        zone = "+00" if t.tz is not None else ""
        return _render(column, ints, special, lambda v: _timestamp_text(v, zone))
    return None


def _render(column: pa.Array, ints: pa.Array, special: pa.Array, one: object) -> pa.Array | None:
    assert callable(one)
    if not pc.any(special).as_py():
        return None
    naive = column.cast(pa.timestamp(column.type.unit)) if pa.types.is_timestamp(column.type) else column
    usual = pc.cast(pc.if_else(special, pa.scalar(None, naive.type), naive), pa.string())
    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        usual = pc.binary_join_element_wise(usual, pa.scalar("+00"), "")
    texts = [one(v) for v in ints.filter(special).to_pylist()]
    return pc.replace_with_mask(usual, special, pa.array(texts, pa.string()))


def _date_text(days: int) -> str:
    if abs(days) == DATE_INFINITY:
        return "infinity" if days > 0 else "-infinity"
    year, month, day = civil_from_days(days)
    return f"{_year(year)}-{month:02d}-{day:02d}" + (" BC" if year <= 0 else "")


def _timestamp_text(us: int, zone: str) -> str:
    if abs(us) == TIMESTAMP_INFINITY:
        return "infinity" if us > 0 else "-infinity"
    days, rest = divmod(us, 86400 * _US)
    year, month, day = civil_from_days(days)
    seconds, fraction = divmod(rest, _US)
    clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction:06d}"
    return f"{_year(year)}-{month:02d}-{day:02d} {clock}{zone}" + (" BC" if year <= 0 else "")


def _year(astronomical: int) -> str:
    return f"{1 - astronomical if astronomical <= 0 else astronomical:04d}"
