"""A column added at the source mid-stream lands in every target without a restart (DMS source).

The DMS feed has header rows (AddColumnName); a later CDC file carries an extra column, as DMS writes after
an ALTER TABLE at the source. One running pipeline (no restart, no resync) must end with the new column in
the target, filled for the rows that carry it and NULL for the others.
"""

from __future__ import annotations

import threading
from pathlib import Path

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Column, TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.sources.dms import DmsOptions, DmsSource
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type
from tests.helpers.warehouse import Target, target_rows

T = TableId("dbo", "accounts")
SCHEMA = TableSchema(
    T, (Column("id", parse_type("bigint"), False), Column("name", parse_type("text"))), ("id",)
)


def write(folder: Path, name: str, text: str) -> None:
    path = folder / "dbo" / "accounts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_column_added_mid_stream_lands_in_the_target_without_a_restart(
    target: Target,
    tmp_path: Path,
) -> None:
    feed, staging = tmp_path / "feed", LocalStore(tmp_path / "staging")
    write(feed, "LOAD00000001.csv", "id,name\n1,ann\n2,bob\n")
    write(feed, "20260101-1000000000.csv", "Op,id,name\nU,2,bobby\nI,3,cy\n")
    source = DmsSource(
        LocalStore(feed),
        {T: SCHEMA},
        state=staging,
        quarantine=Quarantine(staging),
        options=DmsOptions(add_column_name=True),
    )
    wh = target.open()
    pipeline = Pipeline(
        source=source,
        stager=Stager(staging, Quarantine(staging)),
        warehouse=wh,
        schemas={T: SCHEMA},
        batch=BatchConfig(max_rows=1000, max_age_seconds=0.1),
        settings=PipelineConfig(poll_interval_seconds=0.05),
    )
    try:
        pipeline.run(threading.Event(), once=True)
        assert target_rows(wh, ["id", "name"]) == [(1, "ann"), (2, "bobby"), (3, "cy")]

        # ALTER TABLE dbo.accounts ADD email at the source: DMS's next file has the extra column.
        write(
            feed,
            "20260101-1001000000.csv",
            "Op,id,name,email\nI,4,dee,dee@example.com\nU,1,ann,ann@example.com\n",
        )
        pipeline.run(threading.Event(), once=True)  # the same pipeline: no restart, no resync
        assert not pipeline.errors
        assert target_rows(wh, ["id", "name", "email"]) == [
            (1, "ann", "ann@example.com"),
            (2, "bobby", None),
            (3, "cy", None),
            (4, "dee", "dee@example.com"),
        ]
    finally:
        wh.close()
