"""A SQL Server table whose changes were cleaned up before they were read stops, and stays stopped across a
restart, where every view reads it (issue 14): the stop is persisted in the table's state document in the
staging store, and a restarted source neither fails its start-up check nor reads the table on.

SQL Server itself is the fake of ``tests.helpers.fake_mssql`` (no server here), as in the source's tests.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from replicator.ops import stops
from replicator.storage import LocalStore
from tests.helpers.sqlserver import TID, open_source, read_all, server_with_table


def test_a_sqlserver_table_overtaken_by_the_cleanup_is_stopped_persisted_and_still_stopped_after_a_restart(
    tmp_path: Path,
) -> None:
    state = LocalStore(tmp_path / "staging")
    server = server_with_table(rows=0)
    src = open_source(server, state)
    read_all(src)
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=1, amount=Decimal("1.00"), note="x")
    server.cleanup("dbo_payments", server.max_lsn() + 1)
    assert read_all(src) == []

    live = stops.live(src, "sqlserver")[TID]
    assert live.reason == "needs_resync" and "cleaned up" in live.detail and live.since
    assert live.actions == ["resync"] and "delete _state/sqlserver/dbo.payments.json" in live.todo
    saved = stops.persisted(state, [TID])[TID]  # what `replicator status` reads without a daemon
    assert (saved.reason, saved.detail) == (live.reason, live.detail)

    restarted = open_source(server, state)  # the start-up check does not fail on the stopped table
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=2, amount=Decimal("2.00"), note="y")
    assert read_all(restarted) == [], "still stopped: id 1 is lost, so id 2 alone would be wrong"
    assert stops.live(restarted, "sqlserver")[TID].detail == live.detail
