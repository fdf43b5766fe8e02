"""Reading the slot holds a bounded number of bytes whatever the row sizes (issue 13, point 8).

A run (what ``messages`` hands on at once) was bounded by message count only (512 reads, 16 of them joined):
rows of 1 MB made runs of tens of MB that the source held while it decoded them, while the read-ahead
queue, 64 MB, refilled behind them (~80 MB queued at the peak of a load of 1 MB values)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from replicator.schema import load_tables
from replicator.sources.postgres.readahead import ReadAhead
from replicator.sources.postgres.source import PostgresSource
from replicator.sources.postgres.stream import ReplicationStream
from replicator.storage import LocalStore
from tests.helpers.pg import execute, slot_of, write_schemas

MB = 1 << 20
ROWS = 24


def _runs(source_db: str, threaded: bool) -> list[list[bytes]]:
    """The runs the slot's changes come in, up to the last of the ROWS large rows."""
    stream = ReplicationStream(source_db, slot_of(source_db), "pub")
    reader = ReadAhead(stream, threaded=threaded)
    runs: list[list[bytes]] = []
    try:
        deadline = time.monotonic() + 60
        while sum(1 for run in runs for p in run if p[:1] == b"I") < ROWS:
            assert time.monotonic() < deadline, "the rows did not arrive"
            runs += reader.messages()
    finally:
        reader.close()
        stream.close()
    return runs


def test_runs_of_large_rows_are_cut_by_bytes(source_db: str, tmp_path: Path) -> None:
    schemas = load_tables(write_schemas(tmp_path))
    source = PostgresSource(
        source_db, schemas, state=LocalStore(tmp_path / "state"), slot=slot_of(source_db), publication="pub"
    )
    try:
        list(source.read())  # creates the slot and copies the (empty) tables
    finally:
        source.close()
    execute(
        source_db,
        f"INSERT INTO items (id, b) SELECT g, repeat(md5(g::text), 32768) FROM generate_series(1, {ROWS}) g",
    )
    stream = ReplicationStream(source_db, slot_of(source_db), "pub")
    assert stream.run_bytes <= 4 * MB and ReadAhead(stream).max_bytes <= 16 * MB
    for threaded in (False, True):  # the stream's own runs, then the read-ahead's (the slot resends)
        runs = _runs(source_db, threaded)
        sizes = [sum(map(len, run)) for run in runs]
        assert sum(sizes) >= ROWS * MB
        assert max(sizes) <= 4 * MB + MB + 1024, sizes  # the limit, and the message that reaches it


def test_a_run_takes_no_read_past_its_budget_but_its_first() -> None:
    """Each queued read is up to a stream run's bytes (4 MB and the message that reaches it): a run that
    took one more read once its bytes were under the budget held two of them (7.3 MB in CI)."""
    ahead = ReadAhead(cast(ReplicationStream, None), threaded=True)  # the queue alone: no reader thread
    for size in (3 * MB, 4 * MB + 100, MB, 2 * MB):
        ahead._queue.append((([b"x"], 0), size))
        ahead._bytes += size
    with ahead._cond:
        assert ahead._take(16, 4 * MB)[1] == 3 * MB  # the 4 MB read after it stays queued
        assert ahead._take(16, 4 * MB)[1] == 4 * MB + 100  # the first of a run goes, whatever its size
        assert ahead._take(16, MB // 2, first=False) == ([], 0)  # joining: only what fits
        assert ahead._take(16, 4 * MB)[1] == 3 * MB
    assert ahead._bytes == 0
