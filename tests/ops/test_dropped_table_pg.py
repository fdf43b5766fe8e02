"""A table dropped at the PostgreSQL source stops alone; the daemon and the other tables go on.

Found from outside: with one table of the schema files dropped at the source, the next start failed
(``source table public.b does not exist``) and no table replicated at all. Now that table is STOPPED with
the reason and the way out, a resync while it is still missing is refused without touching its target
rows or staged batches, and once it is back a resync copies it again and it streams.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.daemon import (
    DaemonProcess,
    free_port,
    pg_source_config,
    replicate_until_equal,
    state,
    tables_of,
    wait_for,
)
from tests.helpers.pg import execute, fetch
from tests.helpers.support import run_cli
from tests.sources.postgres.conftest import source_dsn, target_dsn  # noqa: F401 - fixtures

BETA = "public.beta"


def test_a_dropped_source_table_stops_alone_and_a_resync_brings_it_back(
    tmp_path: Path,
    source_dsn: str,  # noqa: F811 - fixture
    target_dsn: str,  # noqa: F811 - fixture
) -> None:
    port = free_port()
    cfg, _ = pg_source_config(tmp_path, source_dsn, target_dsn, port)
    replicate_until_equal(cfg, port, source_dsn, target_dsn)

    execute(source_dsn, "DROP TABLE public.beta", "UPDATE public.alpha SET v = -v WHERE id <= 50")
    kept = fetch(target_dsn, "SELECT count(*) FROM public.beta")
    second = DaemonProcess(cfg, port, name="daemon2")
    try:
        second.wait_ready()
        others = ("alpha", "gamma")
        wait_for(
            lambda: state(target_dsn, others) == state(source_dsn, others),
            60,
            lambda: second.log.read_text()[-3000:],
        )
        stop = tables_of(second.url)[BETA]["stopped"]
        assert stop["reason"] == "source_table_missing" and "does not exist at the source" in stop["detail"]
        assert "replicator resync public.beta" in stop["todo"] and stop["actions"] == ["resync"]
        assert tables_of(second.url)["public.alpha"]["state"] == "active"
        status = run_cli("status", "-c", str(cfg))
        assert f"STOPPED {BETA}: source_table_missing" in status.stdout, status.stdout + status.stderr

        # Still missing: the resync is refused, and what the target holds stays.
        assert run_cli("resync", BETA, "-c", str(cfg)).returncode == 0
        wait_for(
            lambda: "resync refused" in (tables_of(second.url)[BETA].get("reason") or ""),
            30,
            lambda: str(tables_of(second.url)[BETA]),
        )
        assert fetch(target_dsn, "SELECT count(*) FROM public.beta") == kept

        # Back at the source (other rows): a resync copies it, then it streams.
        execute(
            source_dsn,
            "CREATE TABLE public.beta (id bigint PRIMARY KEY, v integer, note text)",
            "INSERT INTO public.beta SELECT g, g, 'back ' || g FROM generate_series(1, 30) g",
        )
        assert run_cli("resync", BETA, "-c", str(cfg)).returncode == 0
        wait_for(
            lambda: tables_of(second.url)[BETA]["stopped"] is None and state(target_dsn) == state(source_dsn),
            60,
            lambda: second.log.read_text()[-3000:],
        )
        execute(source_dsn, "INSERT INTO public.beta VALUES (31, 31, 'streamed')")
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, lambda: second.log.read_text()[-3000:])
    finally:
        assert second.terminate() == 0
