"""Fixtures of the DMS source tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.storage import LocalStore, ObjectStore, S3Settings, S3Store


@pytest.fixture(params=["local", "s3"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ObjectStore, ObjectStore]:
    """(DMS output store, state/quarantine store) on a local folder or on the test S3 server."""
    if request.param == "local":
        return LocalStore(tmp_path / "dms"), LocalStore(tmp_path / "staging")
    settings: S3Settings = request.getfixturevalue("s3_settings")
    bucket: str = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, "dms-out", settings), S3Store(bucket, "staging", settings)
