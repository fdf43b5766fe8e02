"""PostgreSQL source set-up: pre-flight checks (wal_level, privileges, replica identity), the publication,
and slot queries, each failing with a message that says what to fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
import structlog

from replicator.model import TableId
from replicator.sql import quote_ident, quote_table

log = structlog.get_logger(__name__)


# The settings that shape the text PostgreSQL sends (the walsender's output functions and the copies use
# the session's): pinned, so values parse the same whatever the server, database or role defaults are
# (DateStyle = 'SQL, DMY' would send 15/03/2024; TimeZone only changes the offsets written).
SESSION_OPTIONS = "-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=3"


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


def preflight(conn: psycopg2.extensions.connection, tables: Sequence[TableId]) -> list[TableCheck]:
    """Check wal_level, the replication privilege, table access and replica identity; raise with the fix."""
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
        for t in tables:
            cur.execute(
                "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
                "AND i.indisprimary), has_table_privilege(c.oid, 'SELECT') FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                (t.schema, t.name),
            )
            found = cur.fetchone()
            if found is None:
                raise SourceSetupError(f"source table {t} does not exist (or is not visible to the user)")
            ident, has_pk, can_select = found
            if not can_select:
                raise SourceSetupError(f"the source user cannot read {t}: GRANT SELECT ON {t} TO <user>")
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


def _role_exists(cur: psycopg2.extensions.cursor, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    return cur.fetchone() is not None


def ensure_publication(
    conn: psycopg2.extensions.connection, name: str, tables: Sequence[TableId], *, create: bool
) -> None:
    """The publication exists and publishes every table; created or extended only when ``create``.

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
            return
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
            return
        # Members as PostgreSQL publishes them (partitions, when not via the root), and as listed.
        cur.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s UNION "
            "SELECT n.nspname, c.relname FROM pg_publication_rel r "
            "JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE p.pubname = %s",
            (name, name),
        )
        have = {TableId(s, n) for s, n in cur.fetchall()}
        missing = [t for t in tables if t not in have]
        if not missing:
            return
        if not create:
            raise SourceSetupError(
                f"publication {name!r} lacks {[str(t) for t in missing]}: "
                f"ALTER PUBLICATION {name} ADD TABLE ..."
            )
        cur.execute(
            f"ALTER PUBLICATION {quote_ident(name)} ADD TABLE {', '.join(quote_table(t) for t in missing)}"
        )
        log.info("publication_extended", publication=name, tables=[str(t) for t in missing])


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
