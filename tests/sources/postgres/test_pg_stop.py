"""A PostgreSQL source table declared with a type its values do not fit stops alone (issue 13, defect 2).

The daemon runs in a child process against a real source and a real PostgreSQL target, with three
tables; ``beta``'s schema file declares ``note`` (text at the source) as ``integer``. Its first batch is
rejected at staging: the table stops with its reason in ``replicator status`` (text and ``--json``), while
``alpha`` and ``gamma`` keep replicating and the slot keeps confirming past the stopped table's changes (no
WAL pinned). The daemon neither loops nor drops the slot, and a restart keeps the stop. Fixing the type and
``replicator resync public.beta`` brings the table back equal to the source.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.daemon import (
    DaemonProcess,
    free_port,
    pg_source_config,
    state,
    tables_of,
    wait_for,
)
from tests.helpers.pg import confirmed_flush, current_lsn, execute
from tests.helpers.support import run_cli

GOOD = ("alpha", "gamma")


def _status(cfg: Path) -> tuple[str, dict[str, dict[str, object]]]:
    text = run_cli("status", "-c", str(cfg))
    doc = run_cli("status", "--json", "-c", str(cfg))
    assert text.returncode == 0 and doc.returncode == 0, text.stderr + doc.stderr
    return text.stdout, {r["table"]: r for r in json.loads(doc.stdout)["tables"]}


def test_a_table_whose_values_do_not_fit_its_declared_type_stops_alone_until_resynced_with_the_type_fixed(
    tmp_path: Path,
    source_dsn: str,
    target_dsn: str,
) -> None:
    port = free_port()
    cfg, slot = pg_source_config(tmp_path, source_dsn, target_dsn, port)
    beta = tmp_path / "schemas" / "tables" / "beta.toml"
    beta.write_text(beta.read_text().replace('note = "text"', 'note = "integer"'))  # 'row 1' is no integer
    first = DaemonProcess(cfg, port)
    try:
        first.wait_ready()
        wait_for(lambda: bool(first.events("pg_table_stopped")), 60, lambda: first.log.read_text()[-3000:])
        execute(
            source_dsn,
            *(f"INSERT INTO public.{t} VALUES (1000, 1, 'later')" for t in ("alpha", "beta", "gamma")),
            "UPDATE public.beta SET v = v + 1",  # the stopped table writes WAL the slot must not wait for
        )
        goal = current_lsn(source_dsn)
        wait_for(lambda: state(target_dsn, GOOD) == state(source_dsn, GOOD), 60, "the other tables go on")
        wait_for(lambda: confirmed_flush(source_dsn, slot) >= goal, 60, "the stopped table holds the slot")
        assert state(target_dsn, ("beta",)) == {"beta": []}
        text, rows = _status(cfg)
        stop = rows["public.beta"]["stopped"]
        assert isinstance(stop, dict) and stop["reason"] == "type_mismatch"
        assert "note" in str(stop["detail"]) and "'row 1' is not a valid integer" in str(stop["detail"])
        assert "replicator resync public.beta" in str(stop["todo"])
        assert rows["public.alpha"]["stopped"] is None and rows["public.gamma"]["stopped"] is None
        assert "STOPPED public.beta: type_mismatch at " in text
    finally:
        assert first.terminate() == 0

    beta.write_text(beta.read_text().replace('note = "integer"', 'note = "text"'))
    second = DaemonProcess(cfg, port, name="daemon2")
    try:
        second.wait_ready()
        assert _status(cfg)[1]["public.beta"]["stopped"] is not None, "a restart keeps the stop"
        out = run_cli("resync", "public.beta", "--reason", "type fixed", "-c", str(cfg))
        assert out.returncode == 0, out.stderr
        wait_for(lambda: tables_of(second.url)["public.beta"]["state"] == "active", 60, "the resync finishes")
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, lambda: second.log.read_text()[-3000:])
        assert _status(cfg)[1]["public.beta"]["stopped"] is None
    finally:
        assert second.terminate() == 0
    logs = first.log.read_text() + second.log.read_text()
    assert logs.count('"event": "replication_slot_created"') == 1, "the slot is never dropped and made again"
    assert '"snapshot_restarted"' not in logs and '"term_failed"' not in logs
