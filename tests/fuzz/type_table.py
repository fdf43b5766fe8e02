"""The table of column types the fuzzer generates (``FuzzType``, see ``tests.fuzz.types``).

``BASIC``: the types that replicated before issue 13; ``MORE``: defect 2's (``time``, ``timetz``, ``money``,
network, bit string, xml, geometric, range and multirange types, ``oid``, ``char(n)``, ``name``, ``citext``,
domains, arrays of them, PostgreSQL's extreme dates), declared in the schema file as in the source DDL
(``/work/notes/types.md`` in the issue's notes gives the mapping). ``TYPES`` is what a workload draws from.

Values are PostgreSQL input text. Where a target cannot hold a value, the schema file declares what the
replicator documents for it (``schema_for``): Redshift has no infinity (a date, timestamp or timestamptz
holding one stops its table), so those columns are ``text`` there. A column added mid-stream gets the type of
its OID, not the schema file's: on Redshift those types are added as their ``_rs`` variant (``added_as``,
values Redshift holds: BC years back to 4714-11-24 BC, years past 9999), the infinities staying with the
columns declared ``text``. The Redshift test loader reads dates, times and timestamps from Parquet's integers
(``tests/helpers/redshift_shim.py``), so BC years, years past 9999 and ``24:00:00`` are tested there as
they are.
"""

from __future__ import annotations

import random
import uuid

from tests.fuzz.types import (
    TEXT_EDGE,
    FuzzType,
    Gen,
    canon_bool,
    canon_date,
    canon_decimal,
    canon_float,
    canon_hex,
    canon_int,
    canon_json,
    canon_lower,
    canon_real,
    canon_timestamp,
    canon_timestamptz,
    gen_date,
    gen_decimal,
    gen_int,
    gen_int_array,
    gen_interval,
    gen_json,
    gen_text,
    gen_text_array,
    gen_ts,
    gen_tstz,
)

# Run on the source before the tables: what MORE's types need.
SETUP_SQL = (
    "CREATE EXTENSION IF NOT EXISTS citext",
    "CREATE DOMAIN posint AS integer CHECK (VALUE > 0)",
    "CREATE DOMAIN clock AS time",
    "CREATE DOMAIN addr AS inet",
    "CREATE DOMAIN span AS int4range",
)


def _pick(*values: str) -> Gen:
    return lambda r: r.choice(values)


def _time(r: random.Random) -> str:
    return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}.{r.randint(0, 999999):06d}"


def _timetz(r: random.Random) -> str:
    return _time(r) + r.choice(["+00", "-08", "+05:30", "+15:59", "-15:59:59"])


def _ipv4(r: random.Random) -> str:
    return ".".join(str(r.randint(0, 255)) for _ in range(4)) + r.choice(["", f"/{r.randint(0, 32)}"])


def _ipv6(r: random.Random) -> str:
    return ":".join(f"{r.randint(0, 65535):x}" for _ in range(8))


def _mac(r: random.Random, n: int = 6) -> str:
    return ":".join(f"{r.randint(0, 255):02x}" for _ in range(n))


def _bits(r: random.Random, lo: int, hi: int) -> str:
    return "".join(r.choice("01") for _ in range(r.randint(lo, hi)))


def _xml(r: random.Random) -> str:
    text = gen_text(r, 16).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<r n="{r.randint(0, 99)}">{text}</r>'


def _num(r: random.Random) -> str:
    return r.choice([str(r.randint(-1000, 1000)), repr(r.uniform(-1e6, 1e6)), "0", "-0", "1e+300"])


def _point(r: random.Random) -> str:
    return f"({_num(r)},{_num(r)})"


def _range(lo: int, hi: int) -> Gen:
    def gen(r: random.Random) -> str:
        a = r.randint(lo, hi - 1)
        return f"{r.choice('[(')}{a},{r.randint(a + 1, hi)}{r.choice(')]')}"

    return gen


def _multirange(r: random.Random) -> str:
    return (
        "{"
        + ",".join(
            f"[{a},{a + r.randint(1, 5)})" for a in sorted(r.sample(range(0, 1000, 10), r.randint(0, 3)))
        )
        + "}"
    )


def _array(gen: Gen, quote: bool = True) -> Gen:
    def array(r: random.Random) -> str:
        items = []
        for _ in range(r.randint(0, 3)):
            v = "NULL" if r.random() < 0.2 else gen(r)
            items.append(
                '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' if quote and v != "NULL" else v
            )
        return "{" + ",".join(items) + "}"

    return array


# fmt: off
# Kept as a table (one type per entry). Edge values are tried 40% of the time, random ones otherwise.
T = FuzzType
BASIC: tuple[FuzzType, ...] = (
    T("int", "integer", "integer", edge=("0", "-1", "2147483647", "-2147483648"),
      gen=gen_int(-(2**31), 2**31 - 1), bulk="(g % 100000)::int", canon=canon_int),
    T("bigint", "bigint", "bigint", edge=("9223372036854775807", "-9223372036854775808", "0"),
      gen=gen_int(-(2**63), 2**63 - 1), bulk="g * 1000003", canon=canon_int),
    T("smallint", "smallint", "smallint", edge=("32767", "-32768", "0"),
      gen=gen_int(-32768, 32767), bulk="(g % 30000)::smallint", canon=canon_int),
    T("numeric12", "numeric(12,2)", "numeric(12,2)",
      edge=("0.00", "-9999999999.99", "9999999999.99", "0.01", "-0.01"),
      gen=lambda r: f"{r.randint(-(10**12) + 1, 10**12 - 1) / 100:.2f}", bulk="(g / 7.0)::numeric(12,2)",
      canon=canon_decimal),
    # Unbounded numeric: exact on PostgreSQL; text elsewhere (DECIMAL(38,10) would round it and refuse NaN),
    # as replicator/sources/postgres/source.py documents. Not added mid-stream: the OID says numeric,
    # not text.
    T("numeric", "numeric", "numeric",
      edge=("NaN", "Infinity", "-Infinity", "0", "-0.000001", "1" + "0" * 39, "-" + "9" * 45 + ".5",
            "0." + "0" * 30 + "17", "12345678901234567890.123456789012345"),
      gen=gen_decimal, bulk="(g::numeric * 12345678901234567890.123456789)", canon=canon_decimal,
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
      gen=gen_date, bulk="date '2000-01-01' + (g % 100000)::int", canon=canon_date),
    T("timestamp", "timestamp", "timestamp",
      edge=("0001-01-01 00:00:00", "9999-12-31 23:59:59.999999", "2024-02-29 12:00:00.000001",
            "1970-01-01 00:00:00"),
      gen=gen_ts, bulk="timestamp '2000-01-01' + g * interval '1 second'", canon=canon_timestamp),
    T("timestamptz", "timestamptz", "timestamptz",
      edge=("0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00", "2024-02-29 23:59:59.123456+05",
            "1999-12-31 23:00:00-00:30"),
      gen=gen_tstz, bulk="timestamptz '2000-01-01 00:00+00' + g * interval '1 minute'",
      canon=canon_timestamptz),
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
      gen=gen_int_array, bulk="ARRAY[g::int, (g % 7)::int]"),
    T("text_array", "text[]", "text", edge=("{}", '{""}', '{"a b","c,d",NULL,"q\\"t"}', '{{"x","y"}}'),
      gen=gen_text_array, bulk="ARRAY['a' || g, NULL]"),
    T("interval", "interval", "text",
      edge=("0", "-00:00:01", "1 year 2 mons 3 days 04:05:06.789", "178000000 years", "-178000000 years"),
      gen=gen_interval, bulk="g * interval '1 minute'"),
)

def canon_inet(text: str) -> str:
    """inet as its output function writes it: a host address without its full mask. (A cast to text keeps
    '/32' and '/128'; a text column in the target holds what the source sent, without them.)"""
    if text.endswith("/32") and ":" not in text:
        return text[:-3]
    if text.endswith("/128") and ":" in text:
        return text[:-4]
    return text


_REDSHIFT_TEXT = {"redshift": "text"}  # no infinity on Redshift (or no TIMETZ/array type there)

MORE: tuple[FuzzType, ...] = (
    T("time", "time", "time", edge=("00:00:00", "23:59:59.999999", "24:00:00", "12:34:56.789"),
      gen=_time, bulk="time '00:00' + g * interval '1 second'"),
    T("timetz", "timetz", "time with time zone",
      edge=("12:34:56.789+05:30", "00:00:00-15:59:59", "23:59:59.999999+15:59", "24:00:00+00"),
      gen=_timetz, bulk="timetz '00:00+02' + g * interval '1 second'", schema_for=_REDSHIFT_TEXT),
    T("money", "money", "money", edge=("1234.56", "-92233720368547758.08", "92233720368547758.07", "0"),
      gen=lambda r: f"{r.randint(-(10**12), 10**12) / 100:.2f}", bulk="(g / 100.0)::numeric::money"),
    T("inet", "inet", "inet", edge=("192.168.0.1/24", "2001:db8::1", "0.0.0.0", "::", "::ffff:1.2.3.4"),
      gen=lambda r: _ipv4(r) if r.random() < 0.6 else _ipv6(r), bulk="'10.0.0.0'::inet + g",
      canon=canon_inet),
    T("cidr", "cidr", "cidr", edge=("10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0", "::/0"),
      gen=lambda r: f"{r.randint(0, 255)}.{r.randint(0, 255)}.0.0/16",
      bulk="network(set_masklen('10.0.0.0'::inet + g * 256, 24))"),
    T("macaddr", "macaddr", "macaddr", edge=("08:00:2b:01:02:03", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"),
      gen=_mac, bulk="('08:00:2b:01:02:' || lpad(to_hex(g % 256), 2, '0'))::macaddr"),
    T("macaddr8", "macaddr8", "macaddr8", edge=("08:00:2b:01:02:03:04:05", "00:00:00:00:00:00:00:00"),
      gen=lambda r: _mac(r, 8), bulk="('08:00:2b:01:02:03:04:' || lpad(to_hex(g % 256), 2, '0'))::macaddr8"),
    T("bit3", "bit(3)", "bit(3)", edge=("101", "000", "111"), gen=lambda r: _bits(r, 3, 3),
      bulk="(g % 8)::int::bit(3)"),
    T("varbit", "varbit(8)", "bit varying(8)", edge=("1", "", "11111111"), gen=lambda r: _bits(r, 0, 8),
      bulk="((g % 256)::int::bit(8))::varbit(8)"),
    T("xml", "xml", "xml", edge=('<a x="1">t &amp; ü</a>', "<!DOCTYPE a><a/>", "just text", "<e/><e/>"),
      gen=_xml, bulk="xmlelement(name r, g)"),
    T("point", "point", "point", edge=("(1.5,-2)", "(1e+300,NaN)", "(0,0)", "(-0,Infinity)"), gen=_point,
      bulk="point(g, -g)"),
    T("line", "line", "line", edge=("{1,-1,0}", "{0.1,0.2,0.3}", "{0,1,-5}"),
      gen=lambda r: f"{{{r.randint(1, 9)},{_num(r)},{_num(r)}}}", bulk="line(point(0, 0), point(g, g + 1))"),
    T("lseg", "lseg", "lseg", edge=("[(0,0),(1,1)]", "[(-1.5,2),(3,-4)]"),
      gen=lambda r: f"[{_point(r)},{_point(r)}]", bulk="lseg(point(g, 0), point(0, g))"),
    T("box", "box", "box", edge=("(1,1),(0,0)", "(-1.5,2),(3,-4)"), gen=lambda r: f"{_point(r)},{_point(r)}",
      bulk="box(point(g, 0), point(0, g))"),
    T("path", "path", "path", edge=("[(0,0),(1,1),(2,0)]", "((0,0),(1,1))"),
      gen=lambda r: "[" + ",".join(_point(r) for _ in range(r.randint(1, 4))) + "]",
      bulk="path(polygon(box(point(g, 0), point(0, g))))"),
    T("polygon", "polygon", "polygon", edge=("((0,0),(1,1),(1,0))", "((0,0))"),
      gen=lambda r: "(" + ",".join(_point(r) for _ in range(r.randint(1, 4))) + ")",
      bulk="polygon(box(point(g, 0), point(0, g)))"),
    T("circle", "circle", "circle", edge=("<(0,0),1>", "<(1.5,-2.5),0.1>", "<(0,0),0>"),
      gen=lambda r: f"<{_point(r)},{r.randint(0, 100)}>", bulk="circle(point(g, g), g)"),
    T("int4range", "int4range", "int4range", edge=("[1,10)", "empty", "(,)", "[-2147483648,2147483647)"),
      gen=_range(-1000, 1000), bulk="int4range((g % 1000)::int, (g % 1000)::int + 5)"),
    T("int8range", "int8range", "int8range", edge=("(,)", "[-9223372036854775808,9223372036854775807)"),
      gen=_range(-(10**15), 10**15), bulk="int8range(g, g * 2 + 1)"),
    T("numrange", "numrange", "numrange", edge=("[1.5,2.25]", "(,0)", "empty", "[NaN,NaN]"),
      gen=_range(-100, 100), bulk="numrange(g / 3.0, g / 2.0 + 1)"),
    T("tsrange", "tsrange", "tsrange", edge=("[2024-01-01,2024-01-02)", "[-infinity,infinity]", "empty"),
      gen=_pick('["2024-01-01 00:00:00","2024-06-01 12:00:00")', "(,2000-01-01)"),
      bulk="tsrange(timestamp '2000-01-01' + g * interval '1 s', NULL)"),
    T("tstzrange", "tstzrange", "tstzrange", edge=("[2024-01-01 00:00:00+00,)", "empty", "(,infinity]"),
      gen=_pick('["2024-01-01 05:00:00+05","2024-06-01 12:00:00-08")', "[2000-01-01 00:00+00,)"),
      bulk="tstzrange(timestamptz '2000-01-01 00:00+00' + g * interval '1 s', NULL)"),
    T("daterange", "daterange", "daterange", edge=("[2024-01-01,2024-02-01)", "[0044-03-15 BC,infinity)"),
      gen=_pick("[2024-01-01,2024-02-01]", "(,2000-01-01)"),
      bulk="daterange(date '2000-01-01' + (g % 1000)::int, NULL)"),
    T("int4multirange", "int4multirange", "int4multirange", edge=("{[1,3),[5,7)}", "{}"), gen=_multirange,
      bulk="int4multirange(int4range((g % 100)::int, (g % 100)::int + 3))"),
    T("nummultirange", "nummultirange", "nummultirange", edge=("{[1.5,2.5]}", "{}"), gen=_multirange,
      bulk="nummultirange(numrange(g, g + 1))"),
    T("datemultirange", "datemultirange", "datemultirange", edge=("{[2024-01-01,2024-02-01)}", "{}"),
      gen=_pick("{[2024-01-01,2024-02-01),[2025-01-01,)}", "{}"),
      bulk="datemultirange(daterange(date '2000-01-01', date '2000-01-01' + (g % 100)::int + 1))"),
    T("oid", "oid", "oid", edge=("4294967295", "0"), gen=gen_int(0, 4294967295),
      bulk="(g % 4294967295)::oid"),
    # char(n) keeps its padding: read with format() (::text strips it; format() makes NULL '').
    T("char4", "char(4)", "character(4)", edge=("ab", "", "abcd", "ü"), gen=lambda r: gen_text(r, 16)[:4],
      bulk="'c' || (g % 100)", read={"pg": "CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END"}),
    T("name", "name", "name", edge=("pg_class", "n" * 63, ""), gen=lambda r: gen_text(r, 30)[:30],
      bulk="('n' || g)::name"),
    T("citext", "citext", "citext", edge=("MiXeD Case", "ß👩\u200d💻", ""), gen=gen_text,
      bulk="('C' || g)::citext"),
    T("interval_t", "interval", "interval",
      edge=("1 year 2 mons -3 days +04:05:06.789", "-178000000 years", "0", "-00:00:00.000001"),
      gen=gen_interval, bulk="g * interval '1 minute'"),
    T("posint", "posint", "integer", edge=("1", "2147483647"), gen=gen_int(1, 2**31 - 1), bulk="g::int + 1",
      canon=canon_int),
    T("clock", "clock", "time", edge=("01:02:03", "24:00:00"), gen=_time,
      bulk="time '01:00' + g * interval '1 s'"),
    T("addr", "addr", "inet", edge=("::1", "10.1.2.3"), gen=_ipv4, bulk="'10.0.0.0'::inet + g",
      canon=canon_inet),
    T("span", "span", "int4range", edge=("[1,2)", "empty"), gen=_range(0, 100),
      bulk="int4range(1, g::int + 2)"),
    T("date_x", "date", "date",
      edge=("infinity", "-infinity", "4714-11-24 BC", "5874897-12-31", "0044-03-15 BC"),
      gen=gen_date, bulk="date '2000-01-01'", canon=canon_date, schema_for=_REDSHIFT_TEXT,
      added_as={"redshift": "date_rs"}),
    T("timestamp_x", "timestamp", "timestamp",
      edge=("4714-11-24 00:00:00 BC", "infinity", "-infinity", "10000-01-01 00:00:00.5",
            "294246-12-31 23:59:59"),
      gen=gen_ts, bulk="timestamp '2000-01-01'", canon=canon_timestamp, schema_for=_REDSHIFT_TEXT,
      added_as={"redshift": "timestamp_rs"}),
    T("timestamptz_x", "timestamptz", "timestamp with time zone",
      edge=("0044-03-15 10:00:00+00 BC", "infinity", "-infinity", "12345-06-07 08:09:10+05"),
      gen=gen_tstz, bulk="timestamptz '2000-01-01 00:00+00'", canon=canon_timestamptz,
      schema_for=_REDSHIFT_TEXT, added_as={"redshift": "timestamptz_rs"}),
    T("time_array", "time[]", "time[]", edge=("{}", "{24:00:00,NULL}"), gen=_array(_time, quote=False),
      bulk="ARRAY[time '00:00' + g * interval '1 s']", schema_for=_REDSHIFT_TEXT),
    T("inet_array", "inet[]", "inet[]", edge=("{}", "{::1,10.0.0.1/8}"), gen=_array(_ipv4, quote=False),
      bulk="ARRAY['10.0.0.0'::inet + g]"),
    T("money_array", "money[]", "money[]", edge=("{}", '{"$1.00",NULL}'), gen=_array(_pick("1.00", "-2.50")),
      bulk="ARRAY[(g / 100.0)::numeric::money]"),
    T("int4range_array", "int4range[]", "int4range[]", edge=("{}", '{"[1,2)",empty}'),
      gen=_array(_range(0, 50)), bulk="ARRAY[int4range(1, g::int + 2)]"),
    T("bit3_array", "bit(3)[]", "bit(3)[]", edge=("{}", "{101,NULL}"),
      gen=_array(lambda r: _bits(r, 3, 3), False),
      bulk="ARRAY[(g % 8)::int::bit(3)]"),
    T("int_array2", "integer[]", "integer[]", edge=("{}", "{{1,2},{3,4}}", "[0:1]={1,2}", "{NULL}"),
      gen=gen_int_array, bulk="ARRAY[g::int, (g % 7)::int]"),
    T("text_array2", "text[]", "text[]", edge=("{}", '{"a,b","q\\"t\\\\",NULL,"","👩\u200d💻"}', "{{a},{b}}"),
      gen=gen_text_array, bulk="ARRAY['a' || g, NULL]"),
    T("uuid_array", "uuid[]", "uuid[]", edge=("{}", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
      gen=_array(lambda r: str(uuid.UUID(int=r.getrandbits(128))), False), bulk="ARRAY[md5(g::text)::uuid]"),
    T("bool_array", "bool[]", "boolean[]", edge=("{}", "{t,f,NULL}"), gen=_array(_pick("t", "f"), False),
      bulk="ARRAY[g % 2 = 0]"),
    T("numeric_array", "numeric(10,2)[]", "numeric(10,2)[]", edge=("{}", "{1.50,-2}"),
      gen=_array(lambda r: f"{r.randint(-9999999, 9999999) / 100:.2f}", False),
      bulk="ARRAY[(g / 7.0)::numeric(10,2)]"),
    T("varchar_array", "varchar(5)[]", "varchar(5)[]", edge=("{}", '{abcde," "}'),
      gen=_array(lambda r: gen_text(r, 20)[:5]), bulk="ARRAY[left('v' || g, 5)]"),
)
# fmt: on

TYPES: tuple[FuzzType, ...] = BASIC + MORE
# Generated only when named (--types), or in place of a type whose ``added_as`` names them.
# fmt: off
EXTRA_TYPES: tuple[FuzzType, ...] = (
    # The extreme dates and timestamps Redshift's DATE and TIMESTAMP hold (4713 BC to 294276 AD, no infinity).
    T("date_rs", "date", "date",
      edge=("4714-11-24 BC", "0044-03-15 BC", "0001-01-01", "10000-01-01", "294276-12-31"),
      gen=gen_date, bulk="date '2000-01-01'", canon=canon_date),
    T("timestamp_rs", "timestamp", "timestamp",
      edge=("4714-11-24 00:00:00 BC", "0044-03-15 12:00:00 BC", "10000-01-01 00:00:00.5",
            "294246-12-31 23:59:59.999999"),
      gen=gen_ts, bulk="timestamp '2000-01-01'", canon=canon_timestamp),
    T("timestamptz_rs", "timestamptz", "timestamp with time zone",
      edge=("4714-11-24 00:00:00+00 BC", "0044-03-15 10:00:00+00 BC", "12345-06-07 08:09:10+05"),
      gen=gen_tstz, bulk="timestamptz '2000-01-01 00:00+00'", canon=canon_timestamptz),
    # What a column is widened to (WIDER): values that only fit the wider type.
    T("varchar100", "varchar(100)", "varchar(100)", edge=("y" * 41, "ü" * 100, "👍" * 100),
      gen=lambda r: "w" * r.randint(41, 60) + gen_text(r, 40)[:40], bulk="'v' || g"),
    T("numeric20", "numeric(20,2)", "numeric(20,2)",
      edge=("999999999999999999.99", "-999999999999999999.99", "10000000000.00"),
      gen=lambda r: f"{r.choice(['', '-'])}{r.randint(10**10, 10**18 - 1)}.{r.randint(0, 99):02d}",
      bulk="(g / 7.0)::numeric(20,2)", canon=canon_decimal),
    T("numeric38", "numeric(38,2)", "numeric(38,2)",
      edge=("999999999999999999999999999999999999.99", "-123456789012345678901234567890123456.78"),
      gen=lambda r: f"{r.choice(['', '-'])}{r.randint(10**18, 10**36 - 1)}.{r.randint(0, 99):02d}",
      bulk="(g / 7.0)::numeric(38,2)", canon=canon_decimal),
)
# fmt: on
BY_NAME = {t.name: t for t in (*TYPES, *EXTRA_TYPES)}

# -- column type changes mid-stream (``ALTER COLUMN ... TYPE``) ---------------------------------------------
# The widenings the replicator follows (``replicator.values.widening``): from a type to the wider ones. A
# narrowing back is tried too (the replicator keeps the wider type: every value still fits it). Other type
# changes are not generated: the declared type stays, and a value that does not parse as it stops its table.
WIDER: dict[str, tuple[str, ...]] = {
    "smallint": ("int", "bigint"),
    "int": ("bigint",),
    "real": ("double",),
    "varchar": ("varchar100", "text"),
    "varchar100": ("text",),
    "numeric12": ("numeric20", "numeric38"),
    "numeric20": ("numeric38",),
}
# Redshift cannot widen numbers in place (the table stops: README "Redshift"): only lengths there.
WIDER_ON = {"redshift": {"varchar": ("varchar100", "text"), "varchar100": ("text",)}}
# Changes between these rewrite the table, which also clears the "missing value" of a column added with a
# DEFAULT: one that the replicator has not yet seen added then comes with no default (NULL in the target,
# with a warning: ``replicator.sources.postgres.setup.with_defaults``). Not generated after such a column.
REWRITES = frozenset({"smallint", "int", "bigint", "real", "double"})
# format_type() of the wider types: the comparator reads a column by the type the source has now.
PG_SPELLING = {
    "int": "integer", "bigint": "bigint", "double": "double precision", "text": "text",
    "varchar100": "character varying(100)", "numeric20": "numeric(20,2)", "numeric38": "numeric(38,2)",
}  # fmt: skip
# ``ADD COLUMN ... DEFAULT <constant>``: the types whose default the replicator gives to the existing rows
# (numbers, text, boolean, dates and times, uuid; README "Architecture"). Others, and volatile defaults, are
# NULL there with a warning: not generated.
DEFAULTABLE = frozenset({
    "int", "bigint", "smallint", "numeric12", "double", "real", "text", "varchar", "bool", "date",
    "timestamp", "timestamptz", "uuid", "time", "char4", "date_rs", "timestamp_rs", "timestamptz_rs",
    "date_x", "timestamp_x", "timestamptz_x",
})  # fmt: skip


def wider(name: str, target: str) -> tuple[str, ...]:
    """The types a column of type ``name`` may be widened to on ``target``."""
    return WIDER_ON.get(target, WIDER).get(name, ())
