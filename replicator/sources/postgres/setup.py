"""PostgreSQL source set-up: pre-flight checks (wal_level, privileges, replica identity), the publication,
and slot queries, each failing with a message that says what to fix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
import structlog

from replicator.model import Column, TableId, TableSchema
from replicator.schema import column_names_problem
from replicator.sql import quote_ident, quote_table

log = structlog.get_logger(__name__)


# The settings that shape the text PostgreSQL sends (the walsender's output functions and the copies use
# the session's): pinned, so values parse the same whatever the server, database or role defaults are
# (DateStyle = 'SQL, DMY' would send 15/03/2024; TimeZone only changes the offsets written). pgoutput and
# COPY convert text to the client's encoding: a LATIN1 database sent its own bytes to a client that did not
# ask, which staging refused as UTF-8 (and the stream stopped for every table).
SESSION_OPTIONS = (
    "-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=3"
    " -c client_encoding=UTF8"
)


def source_dsn(dsn: str) -> str:
    """``dsn`` with ``SESSION_OPTIONS`` added to any ``options`` it has."""
    params = psycopg2.extensions.parse_dsn(dsn)
    params["options"] = f"{params.get('options', '')} {SESSION_OPTIONS}".strip()
    return str(psycopg2.extensions.make_dsn(**params))


class SourceSetupError(RuntimeError):
    """The source database is not ready for logical replication; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class TableCheck:
    table: TableId
    replica_identity: str  # default | nothing | full | index
    has_primary_key: bool

    @property
    def insert_only(self) -> bool:
        """Updates and deletes cannot be identified: PostgreSQL refuses them, so only inserts arrive."""
        return self.replica_identity == "nothing" or (
            self.replica_identity == "default" and not self.has_primary_key
        )


_IDENT = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


def preflight(
    conn: psycopg2.extensions.connection,
    tables: Sequence[TableSchema],
    *,
    missing: list[TableId] | None = None,
    unusable: dict[TableId, str] | None = None,
) -> list[TableCheck]:
    """Check wal_level, the replication privilege, table access, replica identity and what logical
    replication cannot carry (unlogged tables, generated columns); raise with the fix. A table that does
    not exist raises too, unless ``missing`` is given: then it is listed there and left out; so does one
    with a column the replicator cannot take (a reserved name, names equal but for case), unless
    ``unusable`` is given: then it is there with the reason."""
    with conn.cursor() as cur:
        cur.execute("SHOW wal_level")
        row = cur.fetchone()
        if row is None or row[0] != "logical":
            raise SourceSetupError(
                f"wal_level is {row[0] if row else '?'}, logical replication needs wal_level=logical "
                "(RDS/Aurora: set rds.logical_replication=1 in the parameter group and reboot)"
            )
        cur.execute(
            "SELECT rolsuper OR rolreplication OR pg_has_role(current_user, 'rds_replication', 'member') "
            "FROM pg_roles WHERE rolname = current_user"
            if _role_exists(cur, "rds_replication")
            else "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user"
        )
        row = cur.fetchone()
        if not row or not row[0]:
            raise SourceSetupError(
                "the source user may not replicate: ALTER ROLE <user> REPLICATION "
                "(RDS/Aurora: GRANT rds_replication TO <user>)"
            )
        checks: list[TableCheck] = []
        for schema in tables:
            t = schema.table
            cur.execute(
                "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
                "AND i.indisprimary), has_table_privilege(c.oid, 'SELECT'), c.relpersistence, c.oid, "
                "c.relkind "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (t.schema, t.name),
            )
            found = cur.fetchone()
            if found is None and missing is not None:
                missing.append(t)
                continue
            if found is None:
                raise SourceSetupError(f"source table {t} does not exist (or is not visible to the user)")
            ident, has_pk, can_select, persistence, oid, kind = found
            if kind not in ("r", "p"):
                what = _KINDS.get(kind, f"a relation of kind {kind!r}")
                raise SourceSetupError(
                    f"{t} is {what}: logical replication publishes tables only; replicate the tables it "
                    "reads (and build it again as a view of the target, schemas/views)"
                )
            if not can_select:
                raise SourceSetupError(f"the source user cannot read {t}: GRANT SELECT ON {t} TO <user>")
            cur.execute(
                "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                "AND NOT attisdropped",
                (oid,),
            )
            names: dict[int, str] = dict(cur.fetchall())
            problem = _key_problem(conn, cur, oid, ident, schema, names=names)
            if problem is not None:
                raise SourceSetupError(f"{t}: {problem}")
            if persistence == "u":
                raise SourceSetupError(
                    f"{t} is UNLOGGED: PostgreSQL writes no WAL for it, so logical replication never sees "
                    f"its changes: ALTER TABLE {quote_table(t)} SET LOGGED, or remove its schema file"
                )
            problem = column_names_problem(names.values())
            if problem is not None and unusable is not None:
                unusable[t] = f"source columns: {problem}"
                continue
            if problem is not None:
                raise SourceSetupError(f"{t}: source columns: {problem}; rename the column at the source")
            generated = _generated_columns(conn, cur, oid, schema)
            if generated:
                raise SourceSetupError(
                    f"{t}: {', '.join(generated)} generated by PostgreSQL (GENERATED ALWAYS AS ... STORED), "
                    "which logical replication does not publish: every change would leave them NULL in the "
                    "target. Remove them from the schema file (compute them in a view of the target)"
                )
            check = TableCheck(t, _IDENT.get(ident, ident), bool(has_pk))
            if check.insert_only:
                log.warning(
                    "source_table_insert_only",
                    table=str(t),
                    replica_identity=check.replica_identity,
                    detail="no primary key and no replica identity: updates and deletes cannot be "
                    "replicated (PostgreSQL rejects them); ALTER TABLE ... REPLICA IDENTITY FULL to fix",
                )
            checks.append(check)
    return checks


_KINDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table", "S": "a sequence"}


def _key_problem(
    conn: psycopg2.extensions.connection,
    cur: psycopg2.extensions.cursor,
    oid: int,
    ident: str,
    schema: TableSchema,
    *,
    names: Mapping[int, str],
) -> str | None:
    """Why the schema file's ``primary_key`` cannot identify the source's rows (None: it can).

    Changes are merged by that key, and an update says which row it changes by the source's replica
    identity: the primary key (default), an index's columns (``USING INDEX``), or every old value (FULL). A
    declared key other than the identity's columns merges changes into the wrong rows (a key narrower than
    the source's folds rows together; a wider one keeps a stale row when a column of it changes, its old
    value unsent). With FULL the declared key must hold a unique index's columns, if the table has one.
    ``names``: the table's column names by attribute number."""
    width = "indnkeyatts" if conn.server_version >= 110000 else "indnatts"
    cur.execute(
        f"SELECT indisprimary, indisreplident, indkey::text, {width} FROM pg_index WHERE indrelid = %s "
        "AND indisunique AND indpred IS NULL AND indexprs IS NULL ORDER BY indisprimary DESC, indexrelid",
        (oid,),
    )
    uniques: list[tuple[bool, bool, list[str]]] = [
        (bool(primary), bool(replident), [names[int(k)] for k in keys.split()[:n]])
        for primary, replident, keys, n in cur.fetchall()
    ]
    declared = list(schema.primary_key)
    identity = next((cols for primary, replident, cols in uniques if
                     (primary and ident == "d") or (replident and ident == "i")), None)  # fmt: skip
    if identity is not None:
        if set(identity) == set(declared):
            return None
        by = "primary key" if ident == "d" else "replica identity index"
        return (
            f"primary_key = {declared} in the schema file, but the source identifies its rows by {identity} "
            f"(its {by}): changes would be merged into the wrong rows. Declare primary_key = {identity}"
        )
    if uniques and not any(set(cols) <= set(declared) for _, _, cols in uniques):
        return (
            f"primary_key = {declared} in the schema file is not unique in the source (no unique index on "
            f"those columns): rows would be merged together. Declare the columns of a unique index, such as "
            f"{uniques[0][2]}"
        )
    return None


def _generated_columns(
    conn: psycopg2.extensions.connection, cur: psycopg2.extensions.cursor, oid: int, schema: TableSchema
) -> list[str]:
    """The declared columns of ``schema`` that the source table generates (none before PostgreSQL 12)."""
    if conn.server_version < 120000:
        return []
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attgenerated <> '' AND NOT attisdropped",
        (oid,),
    )
    generated = {name for (name,) in cur.fetchall()}
    return [c for c in schema.column_names if c in generated]


# Kinds whose PostgreSQL text every target casts back to the same value in an ADD COLUMN ... DEFAULT.
_DEFAULT_KINDS = frozenset({
    "smallint", "integer", "bigint", "real", "double", "numeric", "text", "varchar", "char", "boolean",
    "date", "timestamp", "timestamptz", "time", "uuid",
})  # fmt: skip


def with_defaults(
    conn: psycopg2.extensions.connection, schema: TableSchema, added: Sequence[str]
) -> TableSchema:
    """``schema`` with ``Column.default`` set on those of the ``added`` columns that the source added with
    a value every existing row holds without a rewrite (``ADD COLUMN ... DEFAULT`` of a non-volatile value:
    PostgreSQL keeps it as the column's "missing value", and logical replication sends no row for it), so
    the target's existing rows get it too instead of NULL. Read from the catalog as it is now: a rewrite
    since (a volatile default, ``ALTER ... TYPE``) left the values in the rows, unseen: a warning says so."""
    if conn.server_version < 110000 or not added:
        return schema
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, a.atthasmissing, (a.attmissingval::text::text[])[1], d.adbin IS NOT NULL "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s::regclass AND a.attname = ANY(%s) AND NOT a.attisdropped",
            (quote_table(schema.table), list(added)),
        )
        found = {name: (missing, value, has_default) for name, missing, value, has_default in cur.fetchall()}
    columns = []
    for col in schema.columns:
        c = col
        missing, value, has_default = found.get(c.name, (False, None, False))
        if missing and value is not None and c.type.kind in _DEFAULT_KINDS:
            c = Column(c.name, c.type, c.nullable, value)
        elif missing or (has_default and c.name in added):
            log.warning(
                "source_column_default_unknown", table=str(schema.table), column=c.name,
                detail="added at the source with a value its existing rows hold that the target cannot be "
                f"given here ({c.type}, or computed per row): they are NULL in the target until "
                f"`replicator resync {schema.table}`",
            )  # fmt: skip
        columns.append(c)
    return TableSchema(schema.table, tuple(columns), schema.primary_key)


def _role_exists(cur: psycopg2.extensions.cursor, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    return cur.fetchone() is not None


def ensure_publication(
    conn: psycopg2.extensions.connection, name: str, tables: Sequence[TableId], *, create: bool
) -> list[TableId]:
    """The publication exists and publishes every table; created or extended only when ``create``. Returns
    the tables it added to an existing publication (a slot that streamed one of them before did not get
    its changes meanwhile).

    A partitioned table's changes must be published as its own (``publish_via_partition_root``, PostgreSQL
    13 and later): without it each change names the partition it happened in, a table the schema files do
    not list, and the changes would pass the replicator by. PostgreSQL then does not publish a TRUNCATE of
    one partition at all (README: PostgreSQL types and tables)."""
    with conn.cursor() as cur:
        partitioned = _partitioned(cur, tables)
        if partitioned and conn.server_version < 130000:
            raise SourceSetupError(
                f"{', '.join(map(str, partitioned))}: partitioned tables need PostgreSQL 13 or later "
                "(publish_via_partition_root)"
            )
        via_root = ", pubviaroot" if conn.server_version >= 130000 else ", TRUE"
        cur.execute(f"SELECT puballtables{via_root} FROM pg_publication WHERE pubname = %s", (name,))
        row = cur.fetchone()
        if row is None:
            if not create:
                raise SourceSetupError(f"publication {name!r} does not exist: CREATE PUBLICATION {name} ...")
            listed = ", ".join(quote_table(t) for t in tables)
            options = " WITH (publish_via_partition_root = true)" if partitioned else ""
            cur.execute(f"CREATE PUBLICATION {quote_ident(name)} FOR TABLE {listed}{options}")
            log.info("publication_created", publication=name, tables=[str(t) for t in tables])
            return []
        all_tables, by_root = row
        if partitioned and not by_root:
            fix = f"ALTER PUBLICATION {quote_ident(name)} SET (publish_via_partition_root = true)"
            if not create:
                raise SourceSetupError(
                    f"publication {name!r} publishes the changes of partitioned table(s) "
                    f"{', '.join(map(str, partitioned))} under each partition's name, which the replicator "
                    f"would not see: {fix}"
                )
            cur.execute(fix)
            log.warning(
                "publication_altered", publication=name, publish_via_partition_root=True,
                tables=[str(t) for t in partitioned],
                detail="changes already in the slot from before were published per partition and are not "
                "replicated: resync these tables if the slot held any",
            )  # fmt: skip
        if all_tables:
            return []
        have = _published(cur, name)
        missing = [t for t in tables if t not in have]
        if not missing:
            return []
        if not create:
            raise SourceSetupError(
                f"publication {name!r} lacks {[str(t) for t in missing]}: "
                f"ALTER PUBLICATION {name} ADD TABLE ...; then replicator resync each one replicated before"
                " (its changes while out of the publication were not sent)"
            )
        cur.execute(
            f"ALTER PUBLICATION {quote_ident(name)} ADD TABLE {', '.join(quote_table(t) for t in missing)}"
        )
        log.info("publication_extended", publication=name, tables=[str(t) for t in missing])
        return missing


def unpublished(conn: psycopg2.extensions.connection, name: str, tables: Sequence[TableId]) -> list[TableId]:
    """Those of ``tables`` the publication does not publish now (none when it is FOR ALL TABLES)."""
    with conn.cursor() as cur:
        cur.execute("SELECT puballtables FROM pg_publication WHERE pubname = %s", (name,))
        row = cur.fetchone()
        if row is not None and row[0]:
            return []
        have = _published(cur, name)
    return [t for t in tables if t not in have]


def _published(cur: psycopg2.extensions.cursor, name: str) -> set[TableId]:
    """The publication's members as PostgreSQL publishes them (partitions, when not via the root; the
    tables of a ``TABLES IN SCHEMA``), and as listed."""
    cur.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s UNION "
        "SELECT n.nspname, c.relname FROM pg_publication_rel r "
        "JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE p.pubname = %s",
        (name, name),
    )
    return {TableId(s, n) for s, n in cur.fetchall()}


def _partitioned(cur: psycopg2.extensions.cursor, tables: Sequence[TableId]) -> list[TableId]:
    """Those of ``tables`` that are partitioned (relkind ``p``)."""
    found = []
    for t in tables:
        cur.execute(
            "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (t.schema, t.name),
        )
        row = cur.fetchone()
        if row is not None and row[0]:
            found.append(t)
    return found


def slot_exists(conn: psycopg2.extensions.connection, slot: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
    if row is not None and row[0] != "pgoutput":
        raise SourceSetupError(f"replication slot {slot!r} uses plugin {row[0]}, not pgoutput: drop it")
    return row is not None


def table_oids(conn: psycopg2.extensions.connection, tables: Sequence[TableId]) -> dict[TableId, int]:
    """Each existing table's relation OID (what pgoutput's Relation messages name it by)."""
    found = {}
    with conn.cursor() as cur:
        for t in tables:
            cur.execute("SELECT to_regclass(%s)::oid", (quote_table(t),))
            row = cur.fetchone()
            if row is not None and row[0] is not None:
                found[t] = int(row[0])
    return found


def slot_invalidated(conn: psycopg2.extensions.connection, slot: str) -> str | None:
    """Why the server invalidated ``slot`` (it can never stream again), or None. PostgreSQL 13+ marks a slot
    that fell more than ``max_slot_wal_keep_size`` behind ``wal_status = 'lost'``; 16+ also says
    ``conflicting`` (a logical slot on a standby whose rows were removed), 17+ ``invalidation_reason``."""
    if conn.server_version < 130000:
        return None
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
        names = [d[0] for d in cur.description or ()]
    if row is None:
        return None
    found = dict(zip(names, row, strict=True))
    if found.get("invalidation_reason"):
        return f"invalidation_reason {found['invalidation_reason']}"
    if found.get("wal_status") == "lost":
        return (
            "wal_status lost: it fell more than max_slot_wal_keep_size behind and the server removed its WAL"
        )
    if found.get("conflicting"):
        return "conflicting: the primary removed rows it still needed"
    return None


def drop_slot(conn: psycopg2.extensions.connection, slot: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )


def slot_lag_bytes(conn: psycopg2.extensions.connection, slot: str) -> int | None:
    """Current WAL position minus the slot's confirmed flush: what the slot holds back."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        )
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None
