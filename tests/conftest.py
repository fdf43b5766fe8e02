"""Shared fixtures. Services are real and their addresses come from the environment.

``REPLICATOR_TEST_PG_DSN``: an admin DSN of a PostgreSQL 15 server with wal_level=logical.
``REPLICATOR_TEST_S3_ENDPOINT``: an S3 API on 127.0.0.1 (moto's server).
``scripts/test.sh`` starts both and sets these. A test that needs a service fails (never skips) when its
variable is missing, so CI cannot pass by quietly testing less.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from replicator.storage import S3Settings
from replicator.warehouses import SqlWarehouse
from tests.helpers.pg import Databases, Templates
from tests.helpers.redshift_shim import RedshiftShim
from tests.helpers.warehouse import KINDS, OldImageCheck, Stager, Target

ROOT = Path(__file__).resolve().parent.parent

# -- pytest-xdist (scripts/test.sh runs ``-n 4 --dist loadgroup``) ------------------------------------------
#
# Everything a test makes on the shared services has a name of its own (databases, replication slots and
# publications, buckets: random suffixes), its files are under its own tmp_path, and its servers take free
# ports, so tests run side by side. A module with a module-scoped fixture runs on one worker (an xdist_group),
# so that the fixture is built once, not once per worker that runs one of its tests (e.g. the image venv of
# tests/ops/test_image_entrypoint.py, pip-built from this checkout's build/).
#
# Tests that time themselves (microbenchmarks with generous bounds) are marked ``timing``: scripts/test.sh
# runs them alone after the parallel run, where other workers cannot starve them of the CPU.
TIMING = (
    "tests/sources/postgres/test_pgoutput.py::test_decoding_a_row_takes_a_few_microseconds",
    "tests/demo/test_demo_generator.py::test_the_default_demo_is_a_few_thousand_rows_generated_quickly",
    "tests/ops/test_http_flood.py::test_a_flood_of_idle_and_slow_connections_starves_neither_health_checks_nor_replication",
    # Two copy workers overlap two tables; under a loaded parallel run one can finish before the other starts.
    "tests/sources/postgres/test_pg_copy.py::test_a_copy_round_reads_tables_at_once_each_in_order_with_every_row[2]",
)
# The slowest tests (--durations of a full run, slowest first), started first so that no worker is left with
# one of them at the end. A new test of more than ~20 s belongs here.
SLOW_FIRST = (
    "tests/ops/test_stopped_tables.py::",
    "tests/ops/test_image_entrypoint.py::",
    "tests/sources/postgres/test_pg_copy.py::test_a_resync_requested_while",
    "tests/ops/test_operations.py::",
    "tests/ops/test_table_failure.py::",
    "tests/ops/test_stopped_tables_pg.py::",
    "tests/sources/postgres/test_fuzz_pg.py::test_a_random_workload",
    "tests/sources/postgres/test_pg_stop.py::",
    "tests/demo/test_demo_run.py::",
    "tests/ops/test_http_limits.py::",
    "tests/sources/postgres/test_pg_restart.py::",
    "tests/sources/postgres/test_pg_operations.py::",
    "tests/sources/postgres/test_pg_copy.py::test_sigkill_during_the_copy",
    "tests/sources/postgres/test_pg_source.py::test_sigkill_at_random_points",
    "tests/sources/postgres/test_pg_copy.py::test_a_table_added_later_is_copied_while",
    "tests/test_end_to_end.py::",
    "tests/test_key_changes.py::test_generated_key_changes",
    "tests/sources/postgres/test_pg_source.py::test_an_unchanged_1mb_toast_value",
    "tests/test_crash_safety.py::",
    "tests/views/test_views_ivm_",
    "tests/sources/postgres/test_pg_standby_status.py::",
    "tests/sources/dms/test_fuzz_dms.py::test_a_random_dms_feed",
)


def _rank(item: pytest.Item) -> int:
    return next((i for i, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)), len(SLOW_FIRST))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timing: times itself; scripts/test.sh runs it alone, after the rest")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by the markers added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the rest keep their order
    for item in items:
        if item.nodeid in TIMING:
            item.add_marker(pytest.mark.timing)
        fixtures = getattr(item, "_fixtureinfo", None)
        if item.get_closest_marker("xdist_group") or fixtures is None:
            continue
        if "module" in {d.scope for defs in fixtures.name2fixturedefs.values() for d in defs}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def _require(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{var} is not set: run the tests through scripts/test.sh, which starts the services")
    return value


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """A test that runs the command line in-process configures structlog to write to that test's captured
    stderr, which is closed when the test ends: later tests must not log into it."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    return _require("REPLICATOR_TEST_PG_DSN")


@pytest.fixture(scope="session")
def pg_templates(pg_admin_dsn: str) -> Iterator[Templates]:
    templates = Templates(pg_admin_dsn)
    yield templates
    templates.drop_all()


@pytest.fixture
def pg_databases(pg_admin_dsn: str) -> Iterator[Databases]:
    databases = Databases(pg_admin_dsn)
    yield databases
    databases.drop_all()


@pytest.fixture
def pg_dsn(pg_databases: Databases) -> str:
    """DSN of a fresh, empty database, dropped (with its replication slots) after the test."""
    return pg_databases.new()


@pytest.fixture(scope="session")
def s3_settings() -> S3Settings:
    endpoint = _require("REPLICATOR_TEST_S3_ENDPOINT")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return S3Settings(endpoint_url=endpoint, region="us-east-1")


@pytest.fixture
def s3_bucket(s3_settings: S3Settings) -> str:
    """A fresh, empty bucket on the test S3 server."""
    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_settings.endpoint_url, region_name="us-east-1").create_bucket(
        Bucket=name
    )
    return name


# -- the SQL warehouses under test (tests/helpers/warehouse.py) ----------------------------------------------


@pytest.fixture(scope="session")
def redshift_shim(pg_admin_dsn: str) -> Iterator[RedshiftShim]:
    parts = dict(p.split("=", 1) for p in pg_admin_dsn.split())
    shim = RedshiftShim(parts.get("host", "127.0.0.1"), int(parts.get("port", "5432")))
    yield shim
    shim.close()


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Each warehouse in turn: DuckDB in a file, PostgreSQL, and Redshift's code path on PostgreSQL (and
    PostgreSQL copying old images, for the tests marked ``also_with_old_images``)."""
    if request.param == "postgres-old-images":
        return Target("postgres", request.getfixturevalue("pg_dsn"), old_images=True)
    if request.param == "duckdb":
        return Target("duckdb", str(tmp_path / "warehouse.duckdb"))
    if request.param == "redshift":
        return Target("redshift", request.getfixturevalue("pg_dsn"), request.getfixturevalue("redshift_shim"))
    return Target("postgres", request.getfixturevalue("pg_dsn"))


@pytest.fixture
def wh(target: Target) -> Iterator[SqlWarehouse]:
    """``target`` opened and set up."""
    warehouse = target.open()
    if target.old_images:
        assert warehouse.captures_old_images
    warehouse.setup()
    if target.old_images:
        warehouse.add_hook(OldImageCheck())
    yield warehouse
    warehouse.close()


@pytest.fixture
def stager(tmp_path: Path) -> Stager:
    folder = tmp_path / "staged"
    folder.mkdir()
    return Stager(folder)
