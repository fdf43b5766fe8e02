"""Redshift: one commit per merge round for every table that has batches, their ledger rows in it; a table
whose merge fails is set aside and the round tried again without it (issue 16). Redshift's code path on
PostgreSQL through the shim (``tests/helpers/redshift_shim.py``); commits are counted on the warehouse."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Change, Column, Op, Position, SchemaChange, TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.warehouses import RedshiftWarehouse
from tests.helpers.pg import dsn_params, execute, fetch
from tests.helpers.redshift_shim import RedshiftShim, open_stand_in

TABLES = [TableId("public", name) for name in ("a", "b", "c")]
SCHEMAS = {
    t: TableSchema(t, (Column.of("id", "bigint", nullable=False), Column.of("v", "text")), ("id",))
    for t in TABLES
}


class Feed:
    """Yields what ``script`` holds at each read, in order, each change at the next position."""

    def __init__(self) -> None:
        self.script: list[Change | SchemaChange] = []
        self.n = 0

    def add(self, table: TableId, *rows: tuple[int, str]) -> None:
        for key, value in rows:
            self.n += 1
            self.script.append(Change(table, Op.INSERT, (str(key), value), Position(f"{self.n:08d}")))

    def schemas(self) -> Sequence[TableSchema]:
        return list(SCHEMAS.values())

    def read(self) -> Iterator[Change | SchemaChange]:
        script, self.script = self.script, []
        yield from script

    def ack(self, positions: Mapping[TableId, Position]) -> None:
        pass

    def close(self) -> None:
        pass


def _stand_in(pg_dsn: str) -> tuple[RedshiftShim, RedshiftWarehouse]:
    """The Redshift warehouse on the shim over ``pg_dsn``'s server."""
    params = dsn_params(pg_dsn)
    shim = RedshiftShim(params.get("host", "127.0.0.1"), int(params.get("port", "5432")))
    return shim, open_stand_in(shim, pg_dsn)


def _pipeline(feed: Feed, wh: RedshiftWarehouse, tmp_path: Path, *, max_rows: int) -> Pipeline:
    staging = LocalStore(tmp_path / "staging")
    return Pipeline(
        source=feed, stager=Stager(staging, Quarantine(staging)), warehouse=wh, schemas=SCHEMAS,
        batch=BatchConfig(max_rows=max_rows), settings=PipelineConfig(),
    )  # fmt: skip


def _ledger(dsn: str) -> dict[str, int]:
    rows = fetch(dsn, "SELECT table_name, count(*) FROM _replicator.batches GROUP BY table_name")
    return {str(name): int(n) for name, n in rows}


def test_one_commit_per_round_and_a_failing_table_does_not_hold_the_others_back(
    pg_dsn: str, tmp_path: Path
) -> None:
    shim, wh = _stand_in(pg_dsn)
    commits: list[int] = []
    commit = wh._commit

    def counted() -> None:
        commit()
        commits.append(1)

    wh._commit = counted  # type: ignore[method-assign]
    feed = Feed()
    pipeline = _pipeline(feed, wh, tmp_path, max_rows=2)
    try:
        pipeline.start()
        # Two batches of a (max_rows 2), one of b, one of c: four batches, three tables, one commit.
        feed.add(TABLES[0], (1, "x"), (2, "x"), (3, "x"))
        feed.add(TABLES[1], (1, "y"))
        feed.add(TABLES[2], (1, "z"), (2, "z"))
        pipeline.capture(threading.Event())
        commits.clear()
        pipeline.merge_all()
        assert len(commits) == 1, commits
        assert not pipeline.errors
        assert _ledger(pg_dsn) == {"a": 2, "b": 1, "c": 1}
        # b's next batch fails (a constraint the target gained): a and c still commit, in one commit.
        execute(pg_dsn, "ALTER TABLE public.b ADD CONSTRAINT no_bad CHECK (v <> 'bad')")
        feed.add(TABLES[0], (4, "x"))
        feed.add(TABLES[1], (2, "bad"))
        feed.add(TABLES[2], (3, "z"))
        pipeline.capture(threading.Event())
        commits.clear()
        pipeline.merge_all()
        assert len(commits) == 2, commits  # the round's, and the one recording b's failure for status
        assert set(pipeline.errors) == {TABLES[1]}, pipeline.errors
        assert "no_bad" in pipeline.errors[TABLES[1]]
        assert _ledger(pg_dsn) == {"a": 3, "b": 1, "c": 2}
        assert fetch(pg_dsn, "SELECT id FROM public.b ORDER BY id") == [(1,)]
        assert len(list(pipeline.stager.pending(TABLES[1]))) == 1  # kept, in order, for the retry
        # Fixed: the next round takes it.
        execute(pg_dsn, "ALTER TABLE public.b DROP CONSTRAINT no_bad")
        commits.clear()
        pipeline.merge_all()
        assert len(commits) == 2 and not pipeline.errors, commits  # the round's, and clearing the failure
        assert _ledger(pg_dsn) == {"a": 3, "b": 2, "c": 2}
        assert fetch(pg_dsn, "SELECT id, v FROM public.b ORDER BY id") == [(1, "y"), (2, "bad")]
    finally:
        wh.close()
        shim.close()


def test_a_staged_file_that_cannot_be_read_fails_its_table_only_not_the_round(
    pg_dsn: str, tmp_path: Path
) -> None:
    shim, wh = _stand_in(pg_dsn)
    feed = Feed()
    pipeline = _pipeline(feed, wh, tmp_path, max_rows=10)
    try:
        pipeline.start()
        for table in TABLES:
            feed.add(table, (1, "x"))
        pipeline.capture(threading.Event())
        [broken] = list(pipeline.stager.pending(TABLES[1]))
        (tmp_path / "staging" / broken.data_key).write_bytes(b"not parquet")  # read before the transaction
        pipeline.merge_all()
        assert set(pipeline.errors) == {TABLES[1]}, pipeline.errors
        assert _ledger(pg_dsn) == {"a": 1, "c": 1}
    finally:
        wh.close()
        shim.close()


def test_a_batch_staged_before_a_column_was_added_merges_before_the_column_exists_even_when_retried(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Found by the differential fuzzer (seed 553248567, Redshift path): a round evolved every batch of a
    table before merging any, so ``ADD COLUMN ... DEFAULT`` of a later batch reached the target first; when
    the round was tried again (another table failed, or a kill), the earlier batch found the column in the
    target but not in its own shape, took it for dropped at the source, and its update set it to NULL: the
    row lost the default the source gave it. A round now takes each table's batches up to a change of
    shape; the rest go in the next round."""
    shim, wh = _stand_in(pg_dsn)
    feed = Feed()
    pipeline = _pipeline(feed, wh, tmp_path, max_rows=10)
    a, b = TABLES[0], TABLES[1]
    try:
        pipeline.start()
        feed.add(a, (1, "x"))
        feed.add(b, (1, "y"))
        pipeline.capture(threading.Event())
        pipeline.merge_all()
        assert not pipeline.errors
        # b's next batch fails, so the round is tried again without it; a has a batch of its first shape
        # (an update of row 1), then a column added with a default, then a row of the new shape.
        execute(pg_dsn, "ALTER TABLE public.b ADD CONSTRAINT no_bad CHECK (v <> 'bad')")
        feed.add(b, (2, "bad"))
        feed.n += 1
        feed.script.append(Change(a, Op.UPDATE, ("1", "x2"), Position(f"{feed.n:08d}")))
        wider = TableSchema(
            a, (*SCHEMAS[a].columns, replace(Column.of("w", "text"), default="dflt")), ("id",)
        )
        feed.n += 1
        feed.script.append(SchemaChange(a, wider, Position(f"{feed.n:08d}")))
        feed.n += 1
        feed.script.append(Change(a, Op.INSERT, ("2", "z", "w2"), Position(f"{feed.n:08d}")))
        pipeline.capture(threading.Event())
        pipeline.merge_all()
        assert set(pipeline.errors) == {b}, pipeline.errors
        assert fetch(pg_dsn, "SELECT id, v, w FROM public.a ORDER BY id") == [
            (1, "x2", "dflt"),
            (2, "z", "w2"),
        ]
    finally:
        wh.close()
        shim.close()
