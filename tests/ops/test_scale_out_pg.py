"""Scale-out with a PostgreSQL source (issue 18): six tables in three shards, each its own publication and
slot, shared by three ``replicator run`` processes on the real PostgreSQL target under a write load; one
task is SIGKILLed mid-stream and its shard moves to a survivor."""

from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path

import psycopg2
import pytest

from replicator.sources import shard_of
from tests.helpers.daemon import DaemonProcess, _daemon_settings, free_port, pg_connection, wait_for
from tests.helpers.pg import Databases, execute, fetch
from tests.helpers.scale import ledger_duplicates, owners


def _two_per_shard() -> list[str]:
    """Six table names, two in each of three shards (a shard is a hash of the name: few tables may leave
    one empty, and then it is no unit)."""
    by_shard: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for i in range(100):
        k = shard_of(f"public.s{i}", 3)
        if len(by_shard[k]) < 2:
            by_shard[k].append(f"s{i}")
    return sorted(n for names in by_shard.values() for n in names)


NAMES = _two_per_shard()


def _config(path: Path, source: str, target: str, port: int, slot: str) -> Path:
    folder = path.parent / "schemas" / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    for n in NAMES:
        (folder / f"{n}.toml").write_text(
            f'schema = "public"\nname = "{n}"\nprimary_key = ["id"]\n'
            '[columns]\nid = "bigint not null"\nv = "integer"\nnote = "text"\n'
        )
    lease = '[lease]\nscope = "shards"\nmode = "shared"'
    path.write_text(
        f"""schemas = "{path.parent / "schemas"}"
[source]
kind = "postgres"
[source.postgres]
{pg_connection(source)}
slot_name = "{slot}"
publication_name = "{slot}"
shards = 3
[staging]
path = "{path.parent / "stage"}"
[warehouse]
kind = "postgres"
{pg_connection(target)}
{_daemon_settings(port, 200).replace("[lease]", lease)}"""
    )
    return path


class _Load(threading.Thread):
    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rng, self.stop, self.next_id = dsn, random.Random(18), threading.Event(), 1000

    def run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        with conn.cursor() as cur:
            while not self.stop.is_set():
                t = self.rng.choice(NAMES)
                if self.rng.random() < 0.5:
                    self.next_id += 1
                    cur.execute(
                        f"INSERT INTO public.{t} VALUES (%s, %s, 'new')", (self.next_id, self.next_id)
                    )
                else:
                    k = self.rng.randint(1, self.next_id)
                    cur.execute(f"UPDATE public.{t} SET v = v + 1, note = 'upd' WHERE id = %s", (k,))
                    if self.rng.random() < 0.2:
                        cur.execute(f"DELETE FROM public.{t} WHERE id = %s", (k + 1,))
                conn.commit()
                self.stop.wait(0.003)
        conn.close()


def _rows(dsn: str) -> dict[str, set[tuple[object, ...]]]:
    return {n: set(fetch(dsn, f"SELECT id, v, note FROM public.{n}")) for n in NAMES}


@pytest.mark.timeout(300)
def test_three_tasks_share_three_shards_and_a_killed_tasks_shard_moves(
    tmp_path: Path, pg_databases: Databases
) -> None:
    source, target = pg_databases.new(prefix="s"), pg_databases.new()
    for n in NAMES:
        execute(
            source,
            f"CREATE TABLE public.{n} (id bigint PRIMARY KEY, v integer, note text)",
            f"INSERT INTO public.{n} SELECT g, g, 'load' FROM generate_series(1, 100) g",
        )
    slot = f"sh_{os.getpid()}_{random.randrange(10**6)}"
    daemons = []
    load = _Load(source)
    try:
        for name in ("a", "b", "c"):
            port = free_port()
            daemons.append(DaemonProcess(_config(tmp_path / f"{name}.toml", source, target, port, slot), port,
                                         name=name))  # fmt: skip

        def spread(n: int) -> bool:
            o = owners(target, "shards")
            return sorted(o) == ["shard-0", "shard-1", "shard-2"] and len(set(o.values())) == n

        wait_for(lambda: spread(3), 90, lambda: f"shards not spread: {owners(target, 'shards')}")
        expected = {f"{slot}_0", f"{slot}_1", f"{slot}_2"}
        find = f"SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '{slot}%'"
        wait_for(
            lambda: {r[0] for r in fetch(source, find)} == expected, 60, lambda: str(fetch(source, find))
        )
        load.start()
        wait_for(lambda: fetch(target, "SELECT count(*) FROM _replicator.batches")[0][0] > 6, 60, "no merges")
        victim = daemons[0]
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        wait_for(lambda: spread(2), 40, lambda: f"the killed task's shard stayed: {owners(target, 'shards')}")
        assert daemons[1].terminate() == 0  # drains mid-stream: its shards move at once
        wait_for(lambda: spread(1), 20, lambda: f"the drained task's shards: {owners(target, 'shards')}")
        port = free_port()
        cfg = _config(tmp_path / "d.toml", source, target, port, slot)
        daemons.append(DaemonProcess(cfg, port, name="d"))
        wait_for(lambda: spread(2), 40, lambda: f"the new task got no shard: {owners(target, 'shards')}")
        load.stop.set()
        load.join(timeout=10)

        def same() -> bool:
            try:
                return _rows(target) == _rows(source)
            except psycopg2.Error:
                return False

        logs = lambda: "\n".join(d.log.read_text()[-2000:] for d in daemons)  # noqa: E731
        wait_for(same, 120, lambda: f"target differs from source\n{logs()}")
        assert ledger_duplicates(target) == []
        # Each shard has one reader, and its publication holds exactly its tables.
        published = fetch(
            source, f"SELECT pubname, tablename FROM pg_publication_tables WHERE pubname LIKE '{slot}%'"
        )
        tables = [t for _, t in published]
        assert sorted(tables) == NAMES and len({p for p, _ in published}) == 3
    finally:
        load.stop.set()
        for d in daemons:
            if d.proc.poll() is None:
                d.kill()
        for k in range(3):
            execute(source, f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                            f" WHERE slot_name = '{slot}_{k}' AND NOT active")  # fmt: skip
