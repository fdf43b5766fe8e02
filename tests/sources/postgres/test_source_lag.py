"""DMS source lag: age of the oldest listed file not yet consumed, per table (0 when caught up)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import REGISTRY

from replicator.model import Change, Column, TableId, TableSchema
from replicator.sources.dms import DmsOptions, DmsSource
from replicator.storage import LocalStore, Quarantine
from tests.helpers.dms_chunks import expand

T = TableId("lag", "orders")
U = TableId("lag", "idle")
SCHEMAS = {
    T: TableSchema(T, (Column.of("id", "bigint"), Column.of("name", "text")), ("id",)),
    U: TableSchema(U, (Column.of("id", "bigint"), Column.of("name", "text")), ("id",)),
}
LOAD1 = "LOAD00000001.csv"
CDC1 = "20141029-1134010000.csv"


def lag(table: TableId) -> float | None:
    return REGISTRY.get_sample_value("replicator_source_lag_seconds", {"table": str(table)})


def write(root: Path, name: str, text: str, age_seconds: float) -> None:
    """A DMS file in ``T``'s folder whose modification time is ``age_seconds`` ago."""
    path = root / T.schema / T.name / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    then = time.time() - age_seconds
    os.utime(path, (then, then))


def source(tmp_path: Path) -> DmsSource:
    state = LocalStore(tmp_path / "state")
    return DmsSource(
        LocalStore(tmp_path / "dms"), SCHEMAS, state=state, quarantine=Quarantine(state), options=DmsOptions()
    )


def read_all(src: DmsSource) -> list[Change]:
    return [c for c in expand(src.read()) if isinstance(c, Change)]


def test_lag_is_the_age_of_the_oldest_unconsumed_file_and_zero_once_everything_is_acknowledged(
    tmp_path: Path,
) -> None:
    write(tmp_path / "dms", LOAD1, "1,a\n2,b\n", age_seconds=600)
    write(tmp_path / "dms", CDC1, "U,1,c\nI,3,d\n", age_seconds=60)
    src = source(tmp_path)

    changes = read_all(src)
    assert len(changes) == 4
    # Read but not staged yet: both files are unconsumed, the full-load file is the oldest.
    assert 595 <= (lag(T) or 0) <= 700
    assert lag(U) == 0.0  # no files at all: caught up

    src.ack({T: changes[0].position})  # the first row of the full-load file only: it is not consumed
    assert 595 <= (lag(T) or 0) <= 700

    src.ack({T: changes[1].position})  # the whole full-load file: the CDC file is now the oldest
    assert 55 <= (lag(T) or 0) <= 160

    src.ack({T: changes[-1].position})
    assert lag(T) == 0.0
    assert read_all(src) == []
    assert lag(T) == 0.0
    src.close()


def test_after_a_restart_only_files_past_the_acknowledged_point_count(tmp_path: Path) -> None:
    write(tmp_path / "dms", LOAD1, "1,a\n2,b\n", age_seconds=600)
    write(tmp_path / "dms", CDC1, "U,1,c\nI,3,d\n", age_seconds=60)
    first = source(tmp_path)
    changes = read_all(first)
    first.ack({T: changes[1].position})
    first.close()

    again = source(tmp_path)
    rest = read_all(again)
    assert [c.values for c in rest] == [("1", "c"), ("3", "d")]
    assert 55 <= (lag(T) or 0) <= 160
    again.ack({T: rest[-1].position})
    assert lag(T) == 0.0
    again.close()


def test_a_new_file_landing_after_catching_up_brings_the_lag_back(tmp_path: Path) -> None:
    write(tmp_path / "dms", CDC1, "I,1,a\n", age_seconds=30)
    src = source(tmp_path)
    changes = read_all(src)
    src.ack({T: changes[-1].position})
    assert lag(T) == 0.0

    write(tmp_path / "dms", "20141029-1135010000.csv", "I,2,b\n", age_seconds=300)
    more = read_all(src)
    assert [c.values for c in more] == [("2", "b")]
    assert 295 <= (lag(T) or 0) <= 400
    src.ack({T: more[-1].position})
    assert lag(T) == 0.0
    src.close()
