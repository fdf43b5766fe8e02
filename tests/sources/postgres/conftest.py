"""Fixtures of the PostgreSQL source tests: source databases copied from templates made once per session
(``source_db``: the rig's ``items`` and ``nopk``; ``source_dsn``: the daemon tests' three tables of 200
rows), and a second database for a PostgreSQL target (``target_dsn``). All are dropped with their slots."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.daemon import TABLES_SQL
from tests.helpers.pg import SOURCE_DDL, Databases, Templates


@pytest.fixture
def source_db(pg_databases: Databases, pg_templates: Templates) -> str:
    """A fresh database with ``items`` and ``nopk``; its DSN names the test's slot as application_name."""
    dsn = pg_databases.new(template=pg_templates.get(SOURCE_DDL))
    return f"{dsn} application_name=s_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def source_dsn(pg_databases: Databases, pg_templates: Templates) -> str:
    """A fresh database with the three tables of ``tests.helpers.daemon`` (``alpha``, ``beta``, ``gamma``)."""
    return pg_databases.new(prefix="s", template=pg_templates.get(*TABLES_SQL))


@pytest.fixture
def target_dsn(pg_databases: Databases) -> str:
    """A second fresh, empty database."""
    return pg_databases.new()
