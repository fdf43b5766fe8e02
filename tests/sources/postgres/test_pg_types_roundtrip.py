"""Every PostgreSQL type from a real PostgreSQL 15 source arrives in every target as the source holds it.

One table has a column of each type the replicator maps (declared in its schema file as in the source
DDL), an array column of each, domains over some, and edge values (infinities, BC and five-digit years,
24:00:00, NaN, 41-digit numerics, an empty bit string, ZWJ emoji, empty and nested arrays). Rows 1-3 exist
before the slot (the initial copy, CSV), rows 11-13 are written after it and row 1 is updated (the stream,
pgoutput). Each target's text of every column must equal the source's ``::text`` (DuckDB's spelling of BC
dates and float specials aside); the mapping is documented in ``replicator/sources/postgres/source.py``.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import TableId
from replicator.pipeline import Pipeline
from replicator.schema import load_tables
from replicator.sources.postgres.rows import _BUILTIN
from replicator.sources.postgres.source import PostgresSource
from replicator.sql import quote_ident
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type
from tests.helpers.pg import Databases, Templates, catch_up, execute
from tests.helpers.warehouse import Target

T = TableId("public", "every_type")
# (column, source DDL type, schema file type, value of row 1, value of row 2); values are SQL literals.
SCALARS: list[tuple[str, str, str, str, str]] = [
    ("tm", "time", "time", "'12:34:56.789'", "'24:00:00'"),
    ("ttz", "timetz", "time with time zone", "'12:34:56.789+05:30'", "'00:00:00-15:59:59'"),
    ("mon", "money", "money", "'1234.56'", "'-92233720368547758.08'"),
    ("ip", "inet", "inet", "'192.168.0.1/24'", "'2001:db8::1'"),
    ("net", "cidr", "cidr", "'10.0.0.0/8'", "'2001:db8::/32'"),
    ("mac", "macaddr", "macaddr", "'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'"),
    ("mac8", "macaddr8", "macaddr8", "'08:00:2b:01:02:03:04:05'", "'00:00:00:00:00:00:00:00'"),
    ("b3", "bit(3)", "bit(3)", "B'101'", "B'000'"),
    ("vb", "varbit(8)", "bit varying(8)", "B'1'", "B''"),
    ("x", "xml", "xml", "'<a x=\"1\">t &amp; ü</a>'", "'<!DOCTYPE a><a/>'"),
    ("pt", "point", "point", "'(1.5,-2)'", "'(1e+300,NaN)'"),
    ("ln", "line", "line", "'{1,-1,0}'", "'{0.1,0.2,0.3}'"),
    ("ls", "lseg", "lseg", "'[(0,0),(1,1)]'", "'[(-1.5,2),(3,-4)]'"),
    ("bx", "box", "box", "'(1,1),(0,0)'", "'(-1.5,2),(3,-4)'"),
    ("pa", "path", "path", "'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1))'"),
    ("pg", "polygon", "polygon", "'((0,0),(1,1),(1,0))'", "'((0,0))'"),
    ("ci", "circle", "circle", "'<(0,0),1>'", "'<(1.5,-2.5),0.1>'"),
    ("r4", "int4range", "int4range", "'[1,10)'", "'empty'"),
    ("r8", "int8range", "int8range", "'(,)'", "'[-9223372036854775808,9223372036854775807)'"),
    ("rn", "numrange", "numrange", "'[1.5,2.25]'", "'(,0)'"),
    ("rts", "tsrange", "tsrange", "'[2024-01-01,2024-01-02)'", "'[-infinity,infinity]'"),
    ("rtz", "tstzrange", "tstzrange", "'[2024-01-01 00:00:00+00,)'", "'empty'"),
    ("rd", "daterange", "daterange", "'[2024-01-01,2024-02-01)'", "'[0044-03-15 BC,infinity)'"),
    ("m4", "int4multirange", "int4multirange", "'{[1,3),[5,7)}'", "'{}'"),
    ("m8", "int8multirange", "int8multirange", "'{[1,2)}'", "'{}'"),
    ("mn", "nummultirange", "nummultirange", "'{[1.5,2.5]}'", "'{}'"),
    ("mts", "tsmultirange", "tsmultirange", "'{[2024-01-01,2024-01-02)}'", "'{}'"),
    ("mtz", "tstzmultirange", "tstzmultirange", "'{[2024-01-01 00:00:00+00,)}'", "'{}'"),
    ("md", "datemultirange", "datemultirange", "'{[2024-01-01,2024-02-01)}'", "'{}'"),
    ("o", "oid", "oid", "'4294967295'", "'0'"),
    ("c4", "char(4)", "character(4)", "'ab'", "''"),
    ("nm", "name", "name", "'pg_class'", "repeat('n', 63)"),
    ("ct", "citext", "citext", "'MiXeD Case'", "'ß👩‍💻'"),
    ("iv", "interval", "interval", "'1 year 2 mons -3 days +04:05:06.789'", "'-178000000 years'"),
    ("dpos", "posint", "integer", "7", "2147483647"),
    ("dclk", "clock", "time", "'01:02:03'", "'24:00:00'"),
    ("dadr", "addr", "inet", "'::1'", "'10.1.2.3'"),
    ("dspn", "span", "int4range", "'[1,2)'", "'empty'"),
    ("d", "date", "date", "'2024-02-29'", "'infinity'"),
    ("d2", "date", "date", "'0044-03-15 BC'", "'5874897-12-31'"),
    ("ts", "timestamp", "timestamp", "'2024-02-29 23:59:59.999999'", "'4714-11-24 00:00:00 BC'"),
    ("ts2", "timestamp(3)", "timestamp(3)", "'infinity'", "'10000-01-01 00:00:00.5'"),
    ("tz", "timestamptz", "timestamptz", "'2024-02-29 23:59:59.123456+05'", "'-infinity'"),
    ("tz2", "timestamptz", "timestamp with time zone", "'0044-03-15 10:00:00+00 BC'", "'infinity'"),
    ("f4", "real", "real", "'NaN'", "'-Infinity'"),
    ("f8", "double precision", "double precision", "'-0'", "'1e+300'"),
    ("tx", "text", "text", "E'a\\tb\\nc \"q\" \\\\ 👩‍👩‍👧‍👦'", "''"),
    ("nu", "numeric", "numeric", "'12345678901234567890123456789012345678901.5'", "'NaN'"),
    (
        "n38",
        "numeric(38,10)",
        "numeric(38,10)",
        "'1234567890123456789012345678.0123456789'",
        "'-0.0000000001'",
    ),
]
# Array columns: one of each element type above (domains: of their base type), and a few more.
ARRAYS: list[tuple[str, str, str, str, str]] = [
    (f"a_{name}", f"{ddl}[]", f"{declared}[]", f"ARRAY[{v1}::{ddl}, NULL, {v2}::{ddl}]", "'{}'")
    for name, ddl, declared, v1, v2 in SCALARS
    if ddl not in ("posint", "clock", "addr", "span")
] + [
    ("a_int", "int[]", "integer[]", "'{{1,2},{3,4}}'", "'[0:1]={1,2}'"),
    ("a_txt", "text[]", "text[]", r"""'{"a,b","q\"t\\",NULL,"","👩‍💻"}'""", "'{{a},{b}}'"),
    ("a_js", "jsonb[]", "jsonb[]", "ARRAY['{\"k\": [1, 2.5]}'::jsonb, 'null']", "'{}'"),
    ("a_u", "uuid[]", "uuid[]", "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'", "'{}'"),
    ("a_by", "bytea[]", "bytea[]", "ARRAY['\\x00ff'::bytea]", "'{}'"),
    ("a_bo", "bool[]", "boolean[]", "'{t,f,NULL}'", "'{}'"),
    ("a_n", "numeric(10,2)[]", "numeric(10,2)[]", "'{1.50,-2}'", "'{}'"),
    ("a_vc", "varchar(5)[]", "varchar(5)[]", "'{abcde,\" \"}'", "'{}'"),
]
COLUMNS = SCALARS + ARRAYS
# Redshift has no infinity, and its test loader reads the staged file as Python values (which hold neither
# BC dates nor 24:00:00): there these columns are declared text, the documented mapping for such values.
EDGE_TEMPORAL = {"tm", "dclk", "d", "d2", "ts", "ts2", "tz", "tz2"}
# Unbounded numeric (41 digits, NaN): DuckDB has DECIMAL(38, s) only: declared text there (Redshift keeps
# a numeric without precision as text by itself).
UNBOUNDED = {"nu"}

DDL = """
CREATE EXTENSION citext;
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN clock AS time;
CREATE DOMAIN addr AS inet;
CREATE DOMAIN span AS int4range;
"""


def _declared(name: str, declared: str, kind: str) -> str:
    if (kind == "redshift" and name in EDGE_TEMPORAL) or (kind == "duckdb" and name in UNBOUNDED):
        return "text"
    return declared


def _insert(ids: tuple[int, int, int]) -> str:
    names = ", ".join(["id", *(quote_ident(c[0]) for c in COLUMNS)])
    first = ", ".join([str(ids[0]), *(c[3] for c in COLUMNS)])
    second = ", ".join([str(ids[1]), *(c[4] for c in COLUMNS)])
    third = ", ".join([str(ids[2]), *("NULL" for _ in COLUMNS)])
    return f"INSERT INTO every_type ({names}) VALUES ({first}), ({second}), ({third})"


@pytest.fixture
def source_db(pg_databases: Databases, pg_templates: Templates) -> str:
    columns = ", ".join(f"{quote_ident(c[0])} {c[1]}" for c in COLUMNS)
    sql = (DDL, f"CREATE TABLE every_type (id int PRIMARY KEY, {columns})", _insert((1, 2, 3)))
    return pg_databases.new(prefix="s", template=pg_templates.get(*sql))


def test_every_postgresql_type_arrives_in_the_target_as_the_source_holds_it(
    target: Target,
    source_db: str,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "schemas" / "tables"
    folder.mkdir(parents=True)
    body = "\n".join(f'{c[0]} = "{_declared(c[0], c[2], target.kind)}"' for c in COLUMNS)
    toml = (
        f'schema = "public"\nname = "every_type"\nprimary_key = ["id"]\n[columns]\nid = "integer"\n{body}\n'
    )
    (folder / "every_type.toml").write_text(toml)
    schemas = load_tables(folder)
    staging = LocalStore(tmp_path / "staging")
    slot = f"ty_{uuid.uuid4().hex[:10]}"
    source = PostgresSource(source_db, schemas, state=staging, slot=slot, publication=slot)
    wh = target.open()
    pipeline = Pipeline(
        source=source,
        stager=Stager(staging, Quarantine(staging)),
        warehouse=wh,
        schemas=schemas,
        batch=BatchConfig(max_rows=1000, max_age_seconds=0.1),
        settings=PipelineConfig(poll_interval_seconds=0.05),
    )
    try:
        catch_up(pipeline, source, source_db)  # the initial copy: rows 1-3
        execute(
            source_db,
            _insert((11, 12, 13)),
            "UPDATE every_type SET tm = '00:00:00', a_int = '{}', tx = NULL WHERE id = 1",
            "DELETE FROM every_type WHERE id = 3",
        )
        catch_up(pipeline, source, source_db)  # the stream
        assert not pipeline.errors
        assert Quarantine(staging).entries() == [], "no value was set aside"
        got = _target_text(wh, target)
    finally:
        source.close()
        wh.close()
    expected = _source_text(source_db)
    assert [r[0] for r in got] == [1, 2, 11, 12, 13]
    for want, have in zip(expected, got, strict=True):
        for (name, *_), w, h in zip([("id",), *COLUMNS], want, have, strict=True):
            assert _canonical(h) == _canonical(w), f"row {want[0]} column {name}: {h!r} != {w!r}"


def _select(cast: str) -> str:
    cols = ", ".join(cast.format(quote_ident(c[0])) for c in COLUMNS)
    return f"SELECT id, {cols} FROM public.every_type ORDER BY id"


def _source_text(dsn: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            # The output function's text (char(n) keeps its padding: a cast to text would strip it).
            cur.execute(_select("CASE WHEN {0} IS NULL THEN NULL ELSE format('%s', {0}) END"))
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def _target_text(wh: Any, where: Target) -> list[tuple[Any, ...]]:
    if where.kind == "duckdb":
        wh.fetch("SET TimeZone = 'UTC'")
        return [tuple(r) for r in wh.fetch(_select("CAST({} AS VARCHAR)"))]
    # PostgreSQL, and the Redshift code path's stand-in database: its columns as PostgreSQL's text.
    return _source_text(where.address)


_DUCK_BC = re.compile(r"^(\d{4,}-\d\d-\d\d) \(BC\)(.*)$")
_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "-0.0": "-0"}


def _canonical(v: Any) -> Any:
    """DuckDB writes BC as ``0044-03-15 (BC) 10:00:00`` and floats as ``nan``/``inf``/``-0.0``."""
    if not isinstance(v, str):
        return v
    m = _DUCK_BC.match(v)
    if m:
        return f"{m.group(1)}{m.group(2)} BC"
    if v in _FLOATS:
        return _FLOATS[v]
    return v


def test_the_schema_file_types_parse_and_name_themselves_canonically() -> None:
    for _name, _ddl, declared, _v1, _v2 in COLUMNS:
        t = parse_type(declared)
        assert parse_type(str(t)) == t, declared


def test_the_type_oids_the_stream_knows_are_the_servers_own(pg_dsn: str) -> None:
    oids = ", ".join(str(o) for o, _, _ in _BUILTIN)
    catalog = {
        o: (n, a)
        for o, n, a in execute(pg_dsn, f"SELECT oid, typname, typarray FROM pg_type WHERE oid IN ({oids})")
    }
    for oid, array, kind in _BUILTIN:
        name, server_array = catalog[oid]
        assert server_array == array, name
        # 18 is the one-byte "char" of the catalogs, not char(n): it stays text; "bit" alone is SQL
        # Server's boolean in a schema file, PostgreSQL's bit string is declared with its length
        declared = {"char": "text", "bit": "bit(1)"}.get(name, name)
        assert kind == parse_type(declared).kind, name
