"""The slot is confirmed past every finished transaction (issue 13, defect 3), and ``run --once`` drains what
the slot held when it started however long the server takes to send it (defect 4)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.helpers.pg import Rig, current_lsn, execute, target_rows


def test_a_transaction_whose_last_row_completes_a_capture_chunk_is_released_at_its_commit(
    source_db: str,
    tmp_path: Path,
) -> None:
    rig = Rig(source_db, tmp_path, max_rows=5_000)
    rig.run_once()
    # Exactly one capture chunk: its rows are staged (two batches of 5,000) and acknowledged before the
    # Commit message is decoded; nothing is written after it.
    n = rig.source.chunk_rows
    execute(source_db, f"INSERT INTO items (id, a) SELECT g, g FROM generate_series(1, {n}) g")
    target = current_lsn(source_db)
    deadline = time.monotonic() + 20
    while rig.source.stream.flush_lsn < target:
        assert time.monotonic() < deadline, "the slot stayed behind the finished transaction"
        rig.pipeline.run(threading.Event(), once=True)
    rig.close()
    assert len(target_rows(tmp_path / "wh.duckdb", "public.items", "id")) == n


def test_run_once_drains_a_large_transaction_the_server_is_still_decoding(
    source_db: str,
    tmp_path: Path,
) -> None:
    rig = Rig(source_db, tmp_path, max_rows=50_000)
    rig.run_once()
    # The walsender decodes all of it before it sends the first row: seconds of silence, longer than a
    # read's idle time. One --once round must still take all of it.
    n = 300_000
    execute(source_db, f"INSERT INTO items (id, a) SELECT g, g FROM generate_series(1, {n}) g")
    at_start = current_lsn(source_db)
    rig.source.stream.idle_seconds = 0.02  # a read gives up soon, as on a busy machine where decoding is slow
    rig.pipeline.run(threading.Event(), once=True)
    flushed = rig.source.stream.flush_lsn
    rig.close()
    assert len(target_rows(tmp_path / "wh.duckdb", "public.items", "id")) == n
    assert flushed >= at_start


def test_run_once_ends_at_its_drain_point_without_waiting_for_the_stream_to_go_quiet(
    source_db: str,
    tmp_path: Path,
) -> None:
    rig = Rig(source_db, tmp_path, max_rows=50_000)
    rig.run_once()
    execute(source_db, "INSERT INTO items (id, a) SELECT g, g FROM generate_series(1, 2000) g")
    # A read ends after this much quiet: --once must not wait for it once it has all the slot held at start
    # (it waited twice, in the round that read the changes and in the round that found none).
    rig.source.stream.idle_seconds = rig.source.stream.max_read_seconds = 30.0
    started = time.monotonic()
    rig.pipeline.run(threading.Event(), once=True)
    took = time.monotonic() - started
    rig.close()
    assert len(target_rows(tmp_path / "wh.duckdb", "public.items", "id")) == 2000
    assert took < 15.0, f"--once took {took:.1f} s: it waited for quiet past its drain point"
