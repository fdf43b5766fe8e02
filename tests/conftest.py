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

import psycopg2
import pytest
import structlog

from replicator.storage import S3Settings

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """DSN of a fresh, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(pg_admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    dsn = _with_dbname(pg_admin_dsn, name)
    yield dsn
    conn = psycopg2.connect(pg_admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _with_dbname(dsn: str, name: str) -> str:
    parts = [p for p in dsn.split() if not p.startswith("dbname=")]
    return " ".join([*parts, f"dbname={name}"])


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
