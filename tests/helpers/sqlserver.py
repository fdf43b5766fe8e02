"""For the SQL Server source's tests: a fake server with ``dbo.payments`` under CDC, the source opened on
it with a clock of the test's own, and its changes read in order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from replicator.model import Change, Column, TableId, TableSchema
from replicator.sources.sqlserver import SqlServerOptions, SqlServerSource
from replicator.storage import LocalStore
from tests.helpers.fake_mssql import Column as SrcColumn
from tests.helpers.fake_mssql import FakeServer

TID = TableId("dbo", "payments")
SCHEMA = TableSchema(
    TID,
    (
        Column.of("id", "integer", nullable=False),
        Column.of("amount", "numeric(12,2)"),
        Column.of("note", "varchar(40)"),
    ),
    ("id",),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def server_with_table(rows: int = 0) -> FakeServer:
    server = FakeServer()
    server.create_table(
        "dbo", "payments",
        [SrcColumn("id", "int", nullable=False), SrcColumn("amount", "decimal", precision=12, scale=2),
         SrcColumn("note", "nvarchar", char_length=40)],
        ["id"],
    )  # fmt: skip
    with server.transaction() as tx:
        for i in range(1, rows + 1):
            tx.insert("dbo.payments", id=i, amount=Decimal(f"{i}.50"), note=f"r{i}")
    server.enable_cdc("dbo", "payments")
    return server


def open_source(
    server: FakeServer, state: LocalStore, clock: Clock | None = None, **options: Any
) -> SqlServerSource:
    opts = {"page_rows": 1000, "idle_save_seconds": 0.0, "poll_interval_seconds": 0.0, **options}
    return SqlServerSource(
        server.connect, {TID: SCHEMA}, state=state, options=SqlServerOptions(**opts), clock=clock or Clock()
    )


def read_all(src: SqlServerSource) -> list[Change]:
    out = [c for c in src.read() if isinstance(c, Change)]
    positions = [c.position.value for c in out]
    assert positions == sorted(positions) and len(set(positions)) == len(positions), "source order"
    return out
