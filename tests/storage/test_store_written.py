"""Files written straight into the store (``put_written``), and the stage writing its Parquet file that way
(issue 13, point 8): a staged file was built whole in memory first, half a batch of incompressible large
values beside the batch itself at staging's peak."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pyarrow.parquet as pq
import pytest

from replicator.model import Batch, Change, Column, Op, Position, TableId, TableSchema
from replicator.stage import Stager
from replicator.storage import LocalStore, ObjectStore, Quarantine, S3Settings, open_store

BIG = TableSchema(
    TableId("app", "big"), (Column.of("id", "bigint", nullable=False), Column.of("body", "text")), ("id",)
)


class _Failed(Exception):
    pass


def _write_then_fail(f: BinaryIO) -> None:
    f.write(b"x" * 1000)
    raise _Failed


def _check_put_written(store: ObjectStore) -> None:
    assert store.put_written("a/b.bin", lambda f: [f.write(b"x" * 1_000_000), f.write(b"yz")]) == 1_000_002
    assert store.get("a/b.bin") == b"x" * 1_000_000 + b"yz"
    with pytest.raises(_Failed):
        store.put_written("a/c.bin", _write_then_fail)
    assert [o.key for o in store.list("a/")] == ["a/b.bin"]  # a failed write leaves nothing
    src = Path(store.uri("a/b.bin")) if isinstance(store, LocalStore) else None
    if src is not None:
        store.put_file("a/d.bin", src)
        assert store.get("a/d.bin") == store.get("a/b.bin")


def test_a_local_store_writes_a_file_in_place_atomically(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _check_put_written(store)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]


def test_s3_writes_a_file_from_a_temporary_one(s3_settings: S3Settings, s3_bucket: str) -> None:
    _check_put_written(open_store(f"s3://{s3_bucket}/p", s3_settings))


class _NoWholeFiles(LocalStore):
    """A store that refuses data handed over whole for staged files."""

    def put(self, key: str, data: bytes) -> None:
        assert not key.endswith(".parquet"), "a staged file was built in memory and handed over whole"
        super().put(key, data)


def test_the_stage_writes_its_parquet_file_into_the_store_as_it_goes(tmp_path: Path) -> None:
    store = _NoWholeFiles(tmp_path)
    changes = [
        Change(BIG.table, Op.INSERT, (str(i), "v" * (i * 1000)), Position(f"{i:08d}")) for i in range(50)
    ]
    manifest = Stager(store, Quarantine(store)).stage(Batch(BIG.table, BIG, changes))
    path = tmp_path / manifest.data_key
    assert manifest.bytes == path.stat().st_size
    assert pq.read_table(path).column("body").to_pylist() == ["v" * (i * 1000) for i in range(50)]
