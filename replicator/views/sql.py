"""SQL builders for views refreshed in full, one per warehouse kind. Pure: statements only, no connections.

- PostgreSQL: a materialized view; with a unique key it gets a unique index and is refreshed
  ``CONCURRENTLY`` (readers are never blocked), otherwise with a plain ``REFRESH``.
- DuckDB: no materialized views; the view is a table replaced in one transaction.
- Redshift: a materialized view created with ``AUTO REFRESH NO`` (the replicator refreshes it, in dependency
  order); Redshift itself decides whether a refresh is incremental, and the builder asks afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.views.graph import ViewDef


class FullViewSql(Protocol):
    """Statements creating, dropping and refreshing a view that is recomputed as a whole."""

    @property
    def sqlglot_dialect(self) -> str: ...

    def create(self, view: ViewDef) -> list[str]: ...

    def drop(self, view: ViewDef) -> list[str]: ...

    def refresh(self, view: ViewDef) -> list[str]: ...

    def refresh_mode(self, view: ViewDef) -> str:
        """The label of how ``refresh`` recomputes (metrics and status)."""
        ...

    def refresh_report(self, view: ViewDef) -> str | None:
        """Query to run after a refresh that tells how the engine refreshed, or None."""
        ...

    def classify(self, rows: Sequence[tuple[Any, ...]]) -> str:
        """Turn ``refresh_report``'s rows into a mode label."""
        ...


def _schema(view: ViewDef) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {quote_ident(view.name.schema)}"


@dataclass(frozen=True, slots=True)
class PostgresViews:
    sqlglot_dialect: str = "postgres"

    def create(self, view: ViewDef) -> list[str]:
        name = quote_table(view.name)
        statements = [
            _schema(view),
            f"CREATE MATERIALIZED VIEW {name} AS {view.render('postgres')} WITH DATA",
        ]
        if view.unique_key:
            index = quote_ident(f"{view.name.name[:55]}_key")
            cols = ", ".join(quote_ident(c) for c in view.unique_key)
            statements.append(f"CREATE UNIQUE INDEX {index} ON {name} ({cols})")
        return statements

    def drop(self, view: ViewDef) -> list[str]:
        return [f"DROP MATERIALIZED VIEW IF EXISTS {quote_table(view.name)} CASCADE"]

    def refresh(self, view: ViewDef) -> list[str]:
        how = " CONCURRENTLY" if view.unique_key else ""
        return [f"REFRESH MATERIALIZED VIEW{how} {quote_table(view.name)}"]

    def refresh_mode(self, view: ViewDef) -> str:
        return "concurrent" if view.unique_key else "full"

    def refresh_report(self, view: ViewDef) -> str | None:
        return None

    def classify(self, rows: Sequence[tuple[Any, ...]]) -> str:
        return "full"


@dataclass(frozen=True, slots=True)
class DuckDBViews:
    sqlglot_dialect: str = "duckdb"

    def create(self, view: ViewDef) -> list[str]:
        return [_schema(view), *self.refresh(view)]

    def drop(self, view: ViewDef) -> list[str]:
        return [f"DROP TABLE IF EXISTS {quote_table(view.name)}"]

    def refresh(self, view: ViewDef) -> list[str]:
        # Replaced as a whole inside the refresh transaction: readers see the old or the new contents.
        return [f"CREATE OR REPLACE TABLE {quote_table(view.name)} AS {view.render('duckdb')}"]

    def refresh_mode(self, view: ViewDef) -> str:
        return "full"

    def refresh_report(self, view: ViewDef) -> str | None:
        return None

    def classify(self, rows: Sequence[tuple[Any, ...]]) -> str:
        return "full"


@dataclass(frozen=True, slots=True)
class RedshiftViews:
    sqlglot_dialect: str = "redshift"

    def create(self, view: ViewDef) -> list[str]:
        # AUTO REFRESH NO: Redshift's own background refresh neither knows the merge order nor cascades
        # through views on views; the replicator refreshes right after the merges, in dependency order.
        body = view.render("redshift")
        return [_schema(view), f"CREATE MATERIALIZED VIEW {quote_table(view.name)} AUTO REFRESH NO AS {body}"]

    def drop(self, view: ViewDef) -> list[str]:
        return [f"DROP MATERIALIZED VIEW IF EXISTS {quote_table(view.name)} CASCADE"]

    def refresh(self, view: ViewDef) -> list[str]:
        return [f"REFRESH MATERIALIZED VIEW {quote_table(view.name)}"]

    def refresh_mode(self, view: ViewDef) -> str:
        return "redshift"

    def refresh_report(self, view: ViewDef) -> str | None:
        return (
            "SELECT status FROM svl_mv_refresh_status"
            f" WHERE schema_name = {quote_literal(view.name.schema)}"
            f" AND mv_name = {quote_literal(view.name.name)} ORDER BY starttime DESC LIMIT 1"
        )

    def classify(self, rows: Sequence[tuple[Any, ...]]) -> str:
        """SVL_MV_REFRESH_STATUS says e.g. "Refresh successfully updated MV incrementally" or "Refresh
        successfully recomputed MV from scratch"."""
        if not rows or rows[0][0] is None:
            return "unknown"
        status = str(rows[0][0]).lower()
        if "incremental" in status:
            return "incremental"
        if "recomputed" in status or "from scratch" in status:
            return "recompute"
        if "up to date" in status or "already" in status:
            return "unchanged"
        return "unknown"


FULL_VIEW_SQL: dict[str, FullViewSql] = {
    "postgres": PostgresViews(),
    "duckdb": DuckDBViews(),
    "redshift": RedshiftViews(),
}
