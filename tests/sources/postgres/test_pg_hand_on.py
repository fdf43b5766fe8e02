"""The PostgreSQL source hands rows on as soon as the replication socket has nothing more to read (issue 16):
not only when a table has collected ``chunk_rows`` of them, or when the read has been quiet for
``idle_seconds`` (a steady trickle never is)."""

from __future__ import annotations

import time
from pathlib import Path

from replicator.model import ChangeChunk
from tests.helpers.pg import Rig, execute


def test_a_few_rows_come_out_of_a_read_long_before_it_would_end_idle(source_db: str, tmp_path: Path) -> None:
    rig = Rig(source_db, tmp_path)
    try:
        rig.run_once()
        rig.source.stream.idle_seconds = 30.0  # a read now ends only after 30 quiet seconds
        assert rig.source.chunk_rows > 3
        execute(source_db, "INSERT INTO items (id, a) VALUES (1, 1), (2, 2), (3, 3)")
        started = time.monotonic()
        read = rig.source.read()
        got = 0
        while got < 3:  # in one chunk or several, as the walsender's messages come
            item = next(read)
            assert isinstance(item, ChangeChunk), item
            got += len(item)
        waited = time.monotonic() - started
        read.close()
    finally:
        rig.close()
    assert got == 3
    assert waited < 10.0, f"rows held {waited:.1f} s: until the read ended, not when the socket drained"
