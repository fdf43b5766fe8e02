"""Operations on the PostgreSQL source with real processes: the daemon in a child process, a real source
PostgreSQL under a write load from a thread, and a real PostgreSQL target.

- Pausing one table freezes its target while the others keep up, and the slot's confirmed position keeps
  advancing (capture and staging of the paused table go on); resume catches it up to equality.
- ``replicator resync TABLE`` under the same load repairs a damaged target table through a fresh snapshot,
  with no gap and no double effect at the hand-off to streaming, and leaves the other tables alone.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers.daemon import (
    TABLES,
    TOKEN,
    DaemonProcess,
    Load,
    free_port,
    http,
    pg_source_config,
    state,
    tables_of,
    wait_for,
)
from tests.helpers.pg import confirmed_flush, current_lsn, execute
from tests.helpers.support import run_cli

PAUSED = "beta"


def test_pausing_a_table_freezes_its_target_while_the_others_and_the_slot_keep_moving_and_resume_catches_up(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    port = free_port()
    cfg, slot = pg_source_config(tmp_path, source_dsn, target_dsn, port)
    d = DaemonProcess(cfg, port)
    load: Load | None = None
    try:
        d.wait_ready()
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, "initial copy")
        load = Load(source_dsn, seed=71)
        code, row = http(
            "POST", f"{d.url}/tables/public.{PAUSED}/pause", token=TOKEN, body={"reason": "test"}
        )
        assert code == 200 and row["state"] == "paused", row
        frozen = state(target_dsn, (PAUSED,))
        at_pause = current_lsn(source_dsn)

        # Under the load: the slot confirms past the position at the pause (the paused table's changes
        # are in those transactions, so they were captured and staged), and its backlog grows.
        wait_for(lambda: confirmed_flush(source_dsn, slot) > at_pause, 40, "the slot advances while paused")
        wait_for(
            lambda: tables_of(d.url)[f"public.{PAUSED}"]["backlog_batches"] > 0, 30, "paused table staged"
        )
        load.finish()
        at_stop = current_lsn(source_dsn)
        others = tuple(t for t in TABLES if t != PAUSED)
        wait_for(lambda: state(target_dsn, others) == state(source_dsn, others), 60, "the others keep up")
        wait_for(lambda: confirmed_flush(source_dsn, slot) >= at_stop, 40, "the slot confirms all the load")
        assert state(target_dsn, (PAUSED,)) == frozen, "a paused table's target changed"
        assert state(source_dsn, (PAUSED,)) != frozen, "the test needs changes to the paused table"
        assert load.transactions > 50

        code, row = http("POST", f"{d.url}/tables/public.{PAUSED}/resume", token=TOKEN)
        assert code == 200 and row["state"] == "active", row
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, "the paused table catches up")
    finally:
        if load is not None:
            load.stop.set()
        assert d.terminate() == 0
    assert state(target_dsn) == state(source_dsn)


def test_resync_under_a_write_load_repairs_a_damaged_table_and_leaves_the_others_alone(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    port = free_port()
    cfg, _slot = pg_source_config(tmp_path, source_dsn, target_dsn, port)
    d = DaemonProcess(cfg, port)
    load: Load | None = None
    try:
        d.wait_ready()
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, "initial copy")
        # Damage the target on purpose: rows lost, a row changed, a row that never existed.
        execute(
            target_dsn,
            f"DELETE FROM public.{PAUSED} WHERE id BETWEEN 10 AND 40",
            f"UPDATE public.{PAUSED} SET note = 'damaged' WHERE id = 50",
            f"INSERT INTO public.{PAUSED} (id, v, note) VALUES (999999, 0, 'stray')",
        )
        load = Load(source_dsn, seed=72)
        time.sleep(1.0)  # changes of the table streaming before, during and after the copy
        out = run_cli("resync", f"public.{PAUSED}", "--reason", "damaged", "-c", str(cfg))
        assert out.returncode == 0, out.stderr
        wait_for(lambda: bool(d.events("table_recopied")), 60, lambda: d.log.read_text()[-3000:])
        time.sleep(1.0)
        load.finish()
        wait_for(lambda: tables_of(d.url)[f"public.{PAUSED}"]["state"] == "active", 60, "the resync finishes")
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, lambda: d.log.read_text()[-3000:])
        recopied = d.events("table_recopied")
        assert [e["table"] for e in recopied] == [f"public.{PAUSED}"], "only the resynced table is copied"
    finally:
        if load is not None:
            load.stop.set()
        assert d.terminate() == 0
    assert state(target_dsn) == state(source_dsn)
