"""Run one scenario against the real daemon (``python -m replicator run`` as a child process, DuckDB target)
and compare its outcome with the independent reference (``tests.helpers.dms_reference``):

- every table of the target equals the reference's state (good changes applied in order);
- the quarantine holds exactly the rows the reference calls bad (never dropped, never applied), and no good
  row;
- the ledger shows every good change applied exactly once (``tests.helpers.guarantees``);
- every run exits as it should (0, or killed by its crash point), however often the daemon was killed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from replicator.model import TableId
from replicator.sql import quote_ident, quote_table
from tests.fuzz_dms.encode import SCHEMA, TXN_PATH, Writer, config, schema_files
from tests.fuzz_dms.feed import TS_COLUMN, CdcFile, Crash, Kill, LoadFile, Scenario, TxnFile
from tests.fuzz_dms.values import KINDS
from tests.helpers.dms_reference import Bad, FeedLayout, TableColumns, apply, read_feed
from tests.helpers.guarantees import assert_applied_exactly_once, ledger_duckdb

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 120.0


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    rows: int = 0  # rows written, bad ones included
    bad: int = 0  # rows the reference calls bad
    files: int = 0
    runs: int = 0  # daemon processes started
    kills: int = 0  # of which were SIGKILLed (crash points and timed kills)
    seconds: float = 0.0

    @property
    def signature(self) -> str:
        """What kind of failure this is (the shrinker keeps it while it removes operations)."""
        return self.problems[0].split(":", 1)[0] if self.problems else ""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _daemon(cfg: Path, *, once: bool, env: dict[str, str]) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "replicator", "run", "-c", str(cfg), *(["--once"] if once else [])]
    out, err = subprocess.DEVNULL, subprocess.PIPE
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)


def _tail(text: str, lines: int = 6) -> str:
    return "\n    ".join(text.strip().splitlines()[-lines:])


def run_scenario(sc: Scenario, work: Path) -> Outcome:
    """Execute ``sc`` in the empty folder ``work``; the outcome lists every divergence found."""
    started = time.monotonic()
    out = Outcome()
    schema_files(sc, work / "schemas")
    (work / "feed").mkdir()
    writer = Writer(sc, work / "feed")
    for i, op in enumerate(sc.ops):
        if isinstance(op, (LoadFile, CdcFile, TxnFile)):
            writer.write(i, op)
            out.files += 1
            out.rows += len(op.rows)
            continue
        cfg = config(sc, work, max_rows=sc.batch_rows[out.runs % len(sc.batch_rows)])
        out.runs += 1
        if isinstance(op, Kill):
            proc = _daemon(cfg, once=False, env=_env())
            time.sleep(op.seconds)
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=RUN_TIMEOUT)
            out.kills += 1
            if proc.returncode not in (-signal.SIGKILL, 0):
                out.problems.append(f"exit: op {i} (daemon) exited {proc.returncode}:\n    {_tail(err)}")
                break
            continue
        crash = {"REPLICATOR_CRASH_AT": f"{op.point}@{op.nth}"} if isinstance(op, Crash) else {}
        if not _finish(cfg, crash, i, out):
            break
    if not out.problems:
        cfg = config(sc, work, max_rows=sc.batch_rows[out.runs % len(sc.batch_rows)])
        out.runs += 1
        _finish(cfg, {}, len(sc.ops), out)
    if not out.problems:
        _compare(sc, work, out)
    out.seconds = time.monotonic() - started
    return out


def _finish(cfg: Path, crash: dict[str, str], i: int, out: Outcome) -> bool:
    proc = _daemon(cfg, once=True, env=_env(**crash))
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        out.problems.append(
            f"hang: op {i}: run --once still running after {RUN_TIMEOUT:.0f} s:\n    {_tail(err)}"
        )
        return False
    if crash and proc.returncode == -signal.SIGKILL:
        out.kills += 1
        return True
    if proc.returncode != 0:
        out.problems.append(f"exit: op {i}: run --once exited {proc.returncode}:\n    {_tail(err)}")
        return False
    return True


def reference_tables(sc: Scenario) -> dict[str, TableColumns]:
    out = {}
    for t in sc.tables:
        out[t.name] = TableColumns(tuple((c.name, KINDS[c.kind].parse) for c in t.columns), t.key)
    return out


def reference_layout(sc: Scenario) -> FeedLayout:
    lay = sc.layout
    return FeedLayout(
        header=lay.header,
        timestamp=TS_COLUMN if lay.timestamp else None,
        null=lay.null,
        delimiter=lay.delimiter,
        op_for_full_load=lay.op_for_full_load,
        parquet=lay.parquet,
        txn_path=TXN_PATH if lay.txn else None,
    )


def _compare(sc: Scenario, work: Path, out: Outcome) -> None:
    tables = reference_tables(sc)
    good, bad = read_feed(work / "feed", tables, reference_layout(sc), schema=SCHEMA)
    out.bad = len(bad)
    want = apply(good, tables)
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    try:
        for t in sc.tables:
            cols = ", ".join(quote_ident(c.name) for c in t.columns)
            rows = con.execute(f"SELECT {cols} FROM {quote_table(TableId(SCHEMA, t.name))}").fetchall()
            got = {tuple(repr(r[i]) for i in t.key): tuple(r) for r in rows}
            _diff(t.name, want[t.name], got, out)
    finally:
        con.close()
    _compare_quarantine(work, bad, out)
    counts = {f"{SCHEMA}.{t}": sum(1 for r in good if r.table == t) for t in tables}
    try:
        assert_applied_exactly_once(ledger_duckdb(work / "warehouse.duckdb"), counts)
    except AssertionError as exc:
        out.problems.append(f"ledger: {exc}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b
    return type(a) is type(b) and a == b


Rows = dict[Any, tuple[Any, ...]]


def _diff(table: str, want: Rows, got: Rows, out: Outcome) -> None:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = [k for k in sorted(set(want) & set(got)) if not all(map(_same, want[k], got[k]))]
    if missing:
        out.problems.append(f"state: {table}: {len(missing)} rows missing, e.g. {want[missing[0]]!r}")
    if extra:
        example = got[extra[0]]
        out.problems.append(f"state: {table}: {len(extra)} rows the source does not have, e.g. {example!r}")
    for k in changed[:3]:
        out.problems.append(f"state: {table} key {k}: expected {want[k]!r}, target has {got[k]!r}")


def _identity(table: str, file: str, row: int) -> tuple[str, ...]:
    # A CDC_TXN row that cannot be read at all is the feed's, not its table's: (file, row) names it anyway.
    return (file, str(row)) if file.startswith("CDC_TXN") else (table, file, str(row))


def _notes(staging: Path) -> list[dict[str, Any]]:
    """Every quarantine note, one per row: a note for many rows (``rows``) lists them in its data object
    (a JSON array, or JSON lines), each with its own ``position``. Read from the files, as an operator
    would, not through the replicator's code."""
    out: list[dict[str, Any]] = []
    for path in sorted((staging / "_quarantine").glob("*/*.json")):
        note = json.loads(path.read_text())
        if "rows" not in note:
            out.append(note)
            continue
        out.extend({**note, **row} for row in _rows_of(staging / note["data_key"]))
    return out


def _rows_of(path: Path) -> list[dict[str, Any]]:
    """The rows of a many-row quarantine object: Parquet, a JSON array or JSON lines."""
    data = path.read_bytes()
    if data[:4] == b"PAR1":
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data), columns=["position"]).to_pylist()
        return rows
    try:
        doc = json.loads(data)
    except json.JSONDecodeError:
        return [json.loads(line) for line in data.splitlines() if line.strip()]
    return list(doc)


def quarantined(work: Path) -> set[tuple[str, ...]]:
    """(table, file, row) of every row in the replicator's quarantine, however it was set aside."""
    found = set()
    for note in _notes(work / "staging"):
        table = str(note["table"]).split(".", 1)[-1]
        position = note.get("position")
        source = str(note.get("source", ""))
        if position is None and " position " in source:
            position = source.split(" position ", 1)[1]
        if position is not None:
            name, row = str(position)[2:].rsplit(" ", 1)
            found.add(_identity(table, name, int(row)))
        else:
            found.add(_identity(table, source.rsplit("/", 1)[-1], int(note.get("row") or 0)))
    return found


def _compare_quarantine(work: Path, bad: list[Bad], out: Outcome) -> None:
    want = {_identity(b.table, b.file, b.row): b.reason for b in bad}
    got = quarantined(work)
    missing = sorted(set(want) - got)
    extra = sorted(got - set(want))
    if missing:
        out.problems.append(
            f"quarantine: {len(missing)} bad rows not in the quarantine (dropped or applied), e.g. "
            + ", ".join(f"{m} ({want[m]})" for m in missing[:3])
        )
    if extra:
        out.problems.append(
            f"quarantine: {len(extra)} rows quarantined that the reference reads as good, e.g. {extra[:3]}"
        )
