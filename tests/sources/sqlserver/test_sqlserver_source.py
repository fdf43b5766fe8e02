"""The SQL Server CDC source against a fake server that keeps the documented CDC semantics."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from replicator.model import Change
from replicator.sources.sqlserver.source import (
    NeedsResync,
    SqlServerSourceError,
    decode_position,
    to_wire,
)
from replicator.storage import LocalStore
from tests.helpers.sqlserver import SCHEMA, TID, Clock, open_source, read_all, server_with_table


def brief(changes: list[Change]) -> list[tuple[str, tuple[str | None, ...]]]:
    return [(c.op.value, c.values) for c in changes]


@pytest.fixture
def state(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "staging")


def test_initial_load_comes_first_then_changes_from_the_snapshot_lsn_in_commit_and_seqval_order(
    state: LocalStore,
) -> None:
    server = server_with_table(rows=3)
    src = open_source(server, state, page_rows=2)
    loaded = read_all(src)
    assert brief(loaded) == [
        ("I", ("1", "1.50", "r1")), ("I", ("2", "2.50", "r2")), ("I", ("3", "3.50", "r3")),
    ]  # fmt: skip
    assert all(c.commit_time is None for c in loaded)
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=4, amount=Decimal("4.00"), note="new")
        tx.delete("dbo.payments", (1,))
    with server.transaction() as tx:
        tx.update("dbo.payments", (2,), note="changed")
    changes = read_all(src)
    assert brief(changes) == [
        ("I", ("4", "4.00", "new")), ("D", ("1", "1.50", "r1")), ("U", ("2", "2.50", "changed")),
    ]  # fmt: skip
    assert max(c.position.value for c in loaded) < min(c.position.value for c in changes)
    lsn0, seq0, _ = decode_position(changes[0].position.value)
    lsn1, seq1, _ = decode_position(changes[1].position.value)
    assert lsn0 == lsn1 and seq0 < seq1, "one transaction: one LSN, seqval orders its rows"
    assert changes[2].commit_time == server.lsn_time[
        int.from_bytes(decode_position(changes[2].position.value)[0])
    ].replace(tzinfo=UTC)


def test_an_update_is_one_change_carrying_the_new_image_even_when_a_page_ends_between_its_images(
    state: LocalStore,
) -> None:
    server = server_with_table(rows=0)
    src = open_source(server, state, page_rows=2)
    assert read_all(src) == []
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=1, amount=Decimal("1.00"), note="a")
        for n in range(5):
            tx.update("dbo.payments", (1,), note=f"v{n}")
    changes = read_all(src)
    assert brief(changes) == [("I", ("1", "1.00", "a"))] + [("U", ("1", "1.00", f"v{n}")) for n in range(5)]
    pages = [s for s in server.statements if "fn_cdc_get_all_changes_" in s]
    assert len(pages) >= 5 and all("TOP (2)" in s for s in pages), "read in pages of page_rows"


def test_an_update_that_moves_the_primary_key_deletes_the_old_key_first(state: LocalStore) -> None:
    server = server_with_table(rows=1)
    src = open_source(server, state)
    read_all(src)
    with server.transaction() as tx:
        tx.update("dbo.payments", (1,), id=10)
    changes = read_all(src)
    assert brief(changes) == [("D", ("1", "1.50", "r1")), ("U", ("10", "1.50", "r1"))]


def test_a_restart_resumes_right_after_the_last_acknowledged_change_inside_a_transaction(
    state: LocalStore,
) -> None:
    server = server_with_table(rows=0)
    src = open_source(server, state)
    read_all(src)
    with server.transaction() as tx:
        for i in range(1, 6):
            tx.insert("dbo.payments", id=i, amount=Decimal(f"{i}.00"), note=None)
    first = read_all(src)
    src.ack({TID: first[1].position})  # staged through the second row of the transaction, then a crash
    src.close()
    again = read_all(open_source(server, state))
    assert brief(again) == brief(first[2:])
    assert [c.position for c in again] == [c.position for c in first[2:]]


def test_once_everything_read_is_acknowledged_the_next_read_starts_at_the_incremented_lsn(
    state: LocalStore,
) -> None:
    server = server_with_table(rows=0)
    src = open_source(server, state)
    read_all(src)
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=1, amount=Decimal("1.00"), note="x")
    changes = read_all(src)
    src.ack({TID: changes[-1].position})
    top = server.max_lsn()
    doc = json.loads(state.get("_state/sqlserver/dbo.payments.json"))
    assert doc["next_lsn"] == (top + 1).to_bytes(10, "big").hex(), (
        "fn_cdc_increment_lsn of the read's upper LSN"
    )
    server.statements.clear()
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=2, amount=Decimal("2.00"), note="y")
    assert brief(read_all(open_source(server, state))) == [("I", ("2", "2.00", "y"))]
    page = next(s for s in server.statements if "fn_cdc_get_all_changes_" in s)
    assert f"(0x{(top + 1).to_bytes(10, 'big').hex()}, " in page


def test_a_position_older_than_the_min_lsn_needs_a_resync_and_says_so_at_start_up(state: LocalStore) -> None:
    server = server_with_table(rows=0)
    src = open_source(server, state)
    read_all(src)
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=1, amount=Decimal("1.00"), note="x")
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=2, amount=Decimal("2.00"), note="y")
    changes = read_all(src)
    src.ack({TID: changes[0].position})
    server.cleanup("dbo_payments", server.max_lsn())  # the row with id 2 survives, id 1's LSN is gone
    with pytest.raises(
        NeedsResync, match=r"dbo\.payments needs a resync: .* cleaned up before they were read"
    ):
        open_source(server, state)


def test_cleanup_overtaking_a_running_table_stops_that_table_rather_than_skipping_changes(
    state: LocalStore,
) -> None:
    server = server_with_table(rows=0)
    src = open_source(server, state)
    read_all(src)
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=1, amount=Decimal("1.00"), note="x")
    server.cleanup("dbo_payments", server.max_lsn() + 1)
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=2, amount=Decimal("2.00"), note="y")
    assert read_all(src) == []
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=3, amount=Decimal("3.00"), note="z")
    assert read_all(src) == [], "the table stays stopped: id 1 is lost, so id 2 and 3 alone would be wrong"


def test_idle_polls_back_off_up_to_the_maximum_and_reset_when_changes_arrive(state: LocalStore) -> None:
    server = server_with_table(rows=0)
    clock = Clock()
    src = open_source(server, state, clock, poll_interval_seconds=1.0, max_poll_interval_seconds=4.0)
    read_all(src)  # the initial load of an empty table

    def polls_at(offsets: list[float]) -> list[bool]:
        out = []
        for t in offsets:
            clock.now += t
            before = len(server.statements)
            read_all(src)
            out.append(len(server.statements) > before)
        return out

    # waits after each idle poll: 1, 2, 4, 4 seconds
    assert polls_at([0.5, 0.5, 1.0, 1.0, 3.75, 0.25, 3.75, 0.25]) == [
        False,
        True,
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=1, amount=Decimal("1.00"), note="x")
    clock.now += 4
    assert len(read_all(src)) == 1
    assert polls_at([0.0]) == [True], "after changes the next poll is immediate"


def test_net_changes_give_one_final_row_per_key_and_a_restart_rereads_the_same_range(
    state: LocalStore,
) -> None:
    server = server_with_table(rows=0)
    src = open_source(server, state, net_changes=True, page_rows=2)
    read_all(src)
    with server.transaction() as tx:
        for i in (1, 2, 3):
            tx.insert("dbo.payments", id=i, amount=Decimal(f"{i}.00"), note="new")
    with server.transaction() as tx:
        tx.update("dbo.payments", (1,), note="final")
        tx.delete("dbo.payments", (3,))
        tx.insert("dbo.payments", id=4, amount=Decimal("4.00"), note="x")
    changes = read_all(src)
    assert sorted(brief(changes)) == [
        ("I", ("1", "1.00", "final")), ("I", ("2", "2.00", "new")), ("I", ("4", "4.00", "x")),
    ]  # fmt: skip
    src.ack({TID: changes[0].position})
    with server.transaction() as tx:  # a later change must not disturb the re-read of the unstaged range
        tx.update("dbo.payments", (2,), note="later")
    restarted = open_source(server, state, net_changes=True, page_rows=2)
    again = read_all(restarted)
    assert brief(again) == brief(changes[1:])
    assert [c.position for c in again] == [c.position for c in changes[1:]]
    assert read_all(restarted) == [], "the next range waits until this one is staged whole"
    restarted.ack({TID: again[-1].position})
    later = read_all(restarted)
    assert brief(later) == [("U", ("2", "2.00", "later"))]
    assert later[0].position > again[-1].position


def test_start_up_checks_name_every_problem(state: LocalStore) -> None:
    server = server_with_table(rows=0)
    server.cdc_enabled = False
    with pytest.raises(
        SqlServerSourceError, match=r"not enabled for database sales: run EXEC sys\.sp_cdc_enable_db"
    ):
        open_source(server, state)
    server.cdc_enabled = True
    server.job = False
    server.instances["dbo_payments"].captured.remove("note")
    with pytest.raises(SqlServerSourceError) as err:
        open_source(server, state)
    assert "does not capture column(s) ['note']" in str(err.value)
    assert "capture job is not running" in str(err.value)
    del server.instances["dbo_payments"]
    server.job = None
    with pytest.raises(SqlServerSourceError) as err:
        open_source(server, state)
    assert "no capture instance 'dbo_payments' on this table" in str(err.value)
    assert "no CDC capture job" in str(err.value)


def test_a_configured_capture_instance_name_is_used(state: LocalStore) -> None:
    server = server_with_table(rows=0)
    server.enable_cdc("dbo", "payments", "payments_v2")
    del server.instances["dbo_payments"]
    src = open_source(server, state, capture_instances={TID: "payments_v2"})
    read_all(src)
    with server.transaction() as tx:
        tx.insert("dbo.payments", id=1, amount=Decimal("1.00"), note="x")
    assert brief(read_all(src)) == [("I", ("1", "1.00", "x"))]


def test_an_interrupted_initial_load_resumes_after_the_last_acknowledged_key(state: LocalStore) -> None:
    server = server_with_table(rows=7)
    src = open_source(server, state, page_rows=3)
    loaded = read_all(src)
    assert len(loaded) == 7
    src.ack({TID: loaded[3].position})
    with server.transaction() as tx:  # meanwhile a row below the acked key goes away
        tx.delete("dbo.payments", (2,))
    again = read_all(open_source(server, state, page_rows=3))
    assert brief(again[:3]) == brief(loaded[4:]), "rows after key 4, positions continue"
    assert [c.position for c in again[:3]] == [c.position for c in loaded[4:]]
    assert brief(again[3:]) == [("D", ("2", "2.50", "r2"))]


def test_commit_times_are_server_local_time_converted_to_utc(state: LocalStore) -> None:
    server = server_with_table(rows=0)
    src = open_source(server, state, server_time_zone="Europe/Berlin")
    read_all(src)
    with server.transaction(when=datetime(2024, 7, 1, 14, 0, 0)) as tx:
        tx.insert("dbo.payments", id=1, amount=Decimal("1.00"), note="x")
    (change,) = read_all(src)
    assert change.commit_time == datetime(2024, 7, 1, 12, 0, 0, tzinfo=UTC)


def test_source_schema_maps_information_schema_types(state: LocalStore) -> None:
    src = open_source(server_with_table(rows=0), state)
    assert src.source_schema(TID) == SCHEMA


def test_values_become_the_wire_text_the_stage_parses() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert [to_wire(v) for v in (None, True, False, 7, Decimal("1.50"), b"\x01\xff", u, "x")] == [
        None, "1", "0", "7", "1.50", "\\x01ff", str(u), "x",
    ]  # fmt: skip
    assert to_wire(datetime(2024, 1, 2, 3, 4, 5, 123456)) == "2024-01-02 03:04:05.123456"


def test_through_the_pipeline_the_warehouse_ends_equal_to_the_source_table_across_a_restart(
    state: LocalStore, tmp_path: Path
) -> None:
    import threading

    from replicator.config import BatchConfig, PipelineConfig
    from replicator.pipeline import Pipeline
    from replicator.stage import Stager
    from replicator.storage import Quarantine
    from replicator.warehouses import DuckDBWarehouse

    server = server_with_table(rows=25)
    with server.transaction() as tx:
        tx.update("dbo.payments", (3,), id=30)
        tx.delete("dbo.payments", (4,))

    def run() -> None:
        wh = DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
        src = open_source(server, state, page_rows=4)
        pipe = Pipeline(
            source=src, stager=Stager(state, Quarantine(state)), warehouse=wh, schemas={TID: SCHEMA},
            batch=BatchConfig(max_rows=7, max_age_seconds=0.0),
            settings=PipelineConfig(poll_interval_seconds=0.0),
        )  # fmt: skip
        pipe.run(threading.Event(), once=True)
        src.close()
        wh.close()

    run()
    for i in range(5, 15):
        with server.transaction() as tx:
            tx.update("dbo.payments", (i,), note=f"u{i}")
            tx.insert("dbo.payments", id=100 + i, amount=Decimal("9.99"), note=None)
    run()
    wh = DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
    got = sorted(tuple(r) for r in wh.query('SELECT id, amount, note FROM "dbo"."payments"'))
    wh.close()
    want = sorted((r["id"], r["amount"], r["note"]) for r in server.tables[("dbo", "payments")].rows.values())
    assert got == want
