"""Helpers for the scale-out tests: a DMS feed of many small tables with its expected end state, the config
of a daemon on the PostgreSQL target, and what the warehouse says about batches and claims."""

from __future__ import annotations

import csv
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.helpers.daemon import _daemon_settings, pg_connection
from tests.helpers.pg import fetch

COLUMNS = ("id", "v", "note")


class ManyTables:
    """A DMS feed of ``tables`` tables ``fleet.t00``...: a full load, then CDC flushes released one at a time
    (``release``), each with inserts, updates and deletes of every table. ``expected`` is the end state of
    what was released, kept by the generator itself."""

    def __init__(self, root: Path, *, tables: int = 12, rows: int = 20, seed: int = 7) -> None:
        self.root, self.rng = root, random.Random(seed)
        self.names = [f"t{i:02}" for i in range(tables)]
        self.state: dict[str, dict[int, tuple[int, int, str]]] = {n: {} for n in self.names}
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.next_id = rows + 1
        self.flushes = 0
        for n in self.names:
            for i in range(1, rows + 1):
                self.state[n][i] = (i, self.rng.randint(0, 999), f"load {n} {i}")
            self._write(n, "LOAD00000001.csv", [[self._ts(), *map(str, r)] for r in self.state[n].values()])

    def _ts(self) -> str:
        self.clock += timedelta(microseconds=1000)
        return self.clock.strftime("%Y-%m-%d %H:%M:%S.%f")

    def _write(self, table: str, name: str, lines: list[list[str]]) -> None:
        folder = self.root / "fleet" / table
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{name}"
        with tmp.open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(lines)
        os.replace(tmp, folder / name)

    def release(self, n: int = 1, *, changes: int = 15) -> None:
        for _ in range(n):
            self.flushes += 1
            name = (self.clock + timedelta(seconds=self.flushes)).strftime("%Y%m%d-%H%M%S") + "0000.csv"
            for table in self.names:
                rows, lines = self.state[table], []
                for _ in range(changes):
                    op = self.rng.random()
                    if op < 0.4 or not rows:
                        key = self.next_id
                        self.next_id += 1
                        rows[key] = (key, self.rng.randint(0, 999), f"ins {self.flushes}")
                        lines.append(["I", self._ts(), *map(str, rows[key])])
                    elif op < 0.85:
                        key = self.rng.choice(sorted(rows))
                        rows[key] = (key, rows[key][1] + 1, f"upd {self.flushes}")
                        lines.append(["U", self._ts(), *map(str, rows[key])])
                    else:
                        key = self.rng.choice(sorted(rows))
                        lines.append(["D", self._ts(), *map(str, rows.pop(key))])
                self._write(table, name, lines)

    def write_schemas(self, folder: Path) -> Path:
        tables = folder / "tables"
        tables.mkdir(parents=True)
        for n in self.names:
            (tables / f"{n}.toml").write_text(
                f'schema = "fleet"\nname = "{n}"\nprimary_key = ["id"]\n'
                '[columns]\nid = "bigint not null"\nv = "integer"\nnote = "text"\n'
            )
        return folder

    def expected(self) -> dict[str, set[tuple[int, int, str]]]:
        return {n: set(rows.values()) for n, rows in self.state.items()}


def target_state(dsn: str, names: list[str]) -> dict[str, set[tuple[Any, ...]]]:
    return {n: set(fetch(dsn, f'SELECT id, v, note FROM fleet."{n}"')) for n in names}


def shared_config(path: Path, *, source: Path, target: str, port: int, scope: str, extra: str = "") -> Path:
    """A daemon of the shared scope ``scope``: the DMS feed in ``source`` to the PostgreSQL ``target``."""
    lease = f'[lease]\nscope = "{scope}"\nmode = "shared"'
    path.write_text(
        f"""schemas = "{path.parent / "schemas"}"
[source]
path = "{source}"
[source.dms]
timestamp_column_name = "dms_commit_ts"
[staging]
path = "{path.parent / "stage"}"
[warehouse]
kind = "postgres"
{pg_connection(target)}
{_daemon_settings(port, 50).replace("[lease]", lease)}{extra}"""
    )
    return path


def ledger_duplicates(dsn: str) -> list[tuple[Any, ...]]:
    """Batches applied more than once: a change range of a table in two ledger rows (by position)."""
    return fetch(
        dsn,
        "SELECT table_name, first_position, count(*) FROM _replicator.batches"
        " GROUP BY table_name, first_position HAVING count(*) > 1",
    )


def owners(dsn: str, scope: str) -> dict[str, str]:
    """Unit -> owner of the live claims of ``scope`` (none before the first task made the table)."""
    if not fetch(dsn, "SELECT 1 FROM pg_tables WHERE schemaname = '_replicator' AND tablename = 'claims'"):
        return {}
    rows = fetch(
        dsn,
        f"SELECT unit, owner FROM _replicator.claims WHERE scope = '{scope}' AND expires_at > now()",
    )
    return {str(u): str(o) for u, o in rows}
