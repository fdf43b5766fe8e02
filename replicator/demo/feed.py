"""A deterministic demo feed: an orthodontic practice's revenue tables, as AWS DMS writes them to S3.

Layout under ``folder`` (what DMS writes with its defaults, CSV, no date partitioning)::

    <schema>/<table>/LOAD00000001.csv        full load, hex counter, at most ``load_file_rows`` rows each
    <schema>/<table>/20240304-1405000000.csv CDC, named by flush time: YYYYMMDD-HHMMSS + 4 fractional digits

Each file's rows, CSV per RFC 4180 (``,`` delimiter, ``"`` quoting only where needed, ``\\n`` rows, UTF-8),
``NULL`` (unquoted) for SQL NULL:

- full load: ``[ts,] col1, col2, ...`` (no Op column: IncludeOpForFullLoad is off by default)
- CDC:       ``Op, [ts,] col1, col2, ...`` with Op ``I`` (new image), ``U`` (full new image) or ``D``
  (full old image: SQL Server with full supplemental logging)

``ts`` is present when ``FeedFormat.timestamp_column`` is set (DMS's TimestampColumnName): it comes right
after Op in CDC files and first in full-load files, formatted ``yyyy-MM-dd HH:mm:ss.SSSSSS`` (UTC). In CDC
rows it is the source commit time; in full-load rows the load's start time (as with DMS's
UseTaskStartTimeForFullLoadTimestamp), so CDC commit times are always later. With
``add_column_name`` (AddColumnName) each file starts with a header row naming the columns (``Op`` and the
timestamp column's name included). Data columns follow ``schemas/tables/*.toml`` in order; datetime2 values
are written with microseconds, bit as ``1``/``0``, numeric(12,2) with two decimals.

Note for readers: ``LOAD*`` files come before CDC files although they sort after them as plain strings, and
CDC files sort by name. Files appear atomically: each is written under a name starting with ``.tmp-`` and
then renamed, so a reader must skip names starting with ``.``.
"""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from replicator.demo.domain import (
    ACTIVITY_WEIGHTS,
    COLUMNS,
    KEY,
    SCRIPTED,
    TIMESTAMP_COLUMNS,
    RowChange,
    World,
    run_activity,
    seed_world,
    ts_text,
)

NULL = "NULL"
DEFAULT_START = datetime(2024, 3, 4, 14, 0, 0)  # UTC; the full load's transfer time
FLUSH_INTERVAL = timedelta(seconds=60)  # DMS's default CdcMaxBatchInterval
TABLES = tuple(COLUMNS)


@dataclass(frozen=True, slots=True)
class FeedFormat:
    """The DMS S3 endpoint settings the feed imitates (all other settings at their DMS defaults)."""

    schema: str = "dbo"
    timestamp_column: str | None = "dms_commit_ts"  # TimestampColumnName; None: no timestamp column
    add_column_name: bool = False  # AddColumnName: a header row in every file
    load_file_rows: int = 1000  # rows per LOAD file (DMS cuts full-load files by MaxFileSize)


@dataclass(frozen=True, slots=True)
class GenerationSummary:
    """What one ``generate`` / ``generate_more`` call wrote."""

    folder: Path
    files: tuple[Path, ...]  # in write order
    rows: Mapping[str, Mapping[str, int]]  # table -> {"load" | "I" | "U" | "D": rows written}
    first_commit: datetime | None  # earliest CDC commit time written (None: no CDC rows)
    last_commit: datetime | None
    clock: datetime  # the feed's clock after the call: the last file's flush time

    @property
    def total_rows(self) -> int:
        return sum(n for ops in self.rows.values() for n in ops.values())


def generate(
    folder: Path,
    *,
    seed: int = 7,
    practices: int = 3,
    patients: int = 300,
    cdc_files: int = 20,
    changes_per_file: int = 100,
    fmt: FeedFormat | None = None,
    start: datetime = DEFAULT_START,
    until: datetime | None = None,
) -> GenerationSummary:
    """Write a full load of ``patients`` patients (with plans, payments, claims) then ``cdc_files`` CDC
    flushes of about ``changes_per_file`` row changes each (each flush writes one file per changed table).

    With ``until`` (naive UTC, e.g. now), no commit or flush is later than it: flushes come every
    ``FLUSH_INTERVAL`` or closer together, as the time between ``start`` and ``until`` allows.
    The same arguments always produce byte-identical files. Refuses a folder that already holds a feed.
    """
    fmt = fmt or FeedFormat()
    base = folder / fmt.schema
    if base.exists() and any(base.iterdir()):
        raise FileExistsError(f"{base} already holds a feed; use generate_more to extend it")
    world = World(rng=random.Random(seed), now=start)  # noqa: S311 - demo data, not security
    seed_world(world, practices=practices, patients=patients)
    writer = _Writer(folder, fmt)
    for table in TABLES:
        writer.write_load(table, world.rows[table], start)
    _run_cdc(world, writer, files=cdc_files, changes_per_file=changes_per_file, until=until)
    return writer.summary(world.now)


def generate_more(
    folder: Path,
    seed: int = 7,
    *,
    files: int = 5,
    changes_per_file: int = 100,
    fmt: FeedFormat | None = None,
    not_before: datetime | None = None,
    until: datetime | None = None,
) -> GenerationSummary:
    """Append ``files`` more CDC flushes to the feed in ``folder``, continuing from its state and clock.

    The state is rebuilt by replaying the feed's own files, so new keys never collide with any key the feed
    ever used, and new file names sort after every existing one. Deterministic for the same feed and seed.
    ``not_before`` (naive UTC) moves the clock forward first, e.g. to "now" when the feed is replayed live;
    ``until`` keeps every new commit at or before it (see ``generate``), unless the feed's clock is already
    past it (a feed cannot go back in time: then the flushes are 1 ms apart).
    """
    fmt = fmt or FeedFormat()
    world, windows = _replay(folder, fmt)
    if not_before is not None and not_before > world.now:
        world.now = not_before
    world.rng = random.Random(f"{seed}/{windows}")  # noqa: S311 - demo data, not security
    writer = _Writer(folder, fmt)
    _run_cdc(world, writer, files=files, changes_per_file=changes_per_file, until=until)
    return writer.summary(world.now)


def cdc_file_name(t: datetime) -> str:
    """DMS's CDC file name for a flush at ``t``: ``YYYYMMDD-HHMMSS`` then four fractional-second digits."""
    return f"{t:%Y%m%d-%H%M%S}{t.microsecond // 100:04d}.csv"


def _run_cdc(
    world: World, writer: _Writer, *, files: int, changes_per_file: int, until: datetime | None = None
) -> None:
    rng = world.rng
    kinds, weights = list(ACTIVITY_WEIGHTS), list(ACTIVITY_WEIGHTS.values())
    interval = FLUSH_INTERVAL
    if until is not None and files:
        # Fit the flushes between the clock and ``until`` (whole 100 µs, as file names count time).
        room = max((until - world.now) // files, timedelta(milliseconds=1))
        interval = min(interval, timedelta(microseconds=room // timedelta(microseconds=100) * 100))
    # Mean gap between transactions so that a flush interval holds about changes_per_file row changes.
    gap_us = max(2, int(interval.total_seconds() * 0.8e6 * 1.6 / max(changes_per_file, 1)))
    for i in range(files):
        opened = world.now
        end = _to_100us(opened + interval)  # the flush, when ``until`` bounds the feed
        world.log.clear()
        script = list(SCRIPTED[i]) if i < len(SCRIPTED) else []
        while len(world.log) < changes_per_file:
            world.now += timedelta(microseconds=rng.randint(1, 2 * gap_us))
            if until is not None:  # every commit of this flush stays inside its window
                world.now = min(world.now, end - timedelta(microseconds=1))
            kind = script.pop(0) if script else rng.choices(kinds, weights)[0]
            run_activity(world, kind)
        # DMS flushes on its interval; a flush is never before the last commit it holds.
        flush = end if until is not None else max(opened + interval, world.now + timedelta(milliseconds=1))
        world.now = _to_100us(flush)
        writer.write_cdc(world.log, world.now)


def _to_100us(t: datetime) -> datetime:
    """Down to whole 100 µs: CDC file names carry four fractional-second digits."""
    return t.replace(microsecond=t.microsecond // 100 * 100)


class _Writer:
    def __init__(self, folder: Path, fmt: FeedFormat) -> None:
        self.folder, self.fmt = folder, fmt
        self.files: list[Path] = []
        self.rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.commits: list[datetime] = []

    def write_load(self, table: str, rows: Mapping[int, Mapping[str, str | None]], at: datetime) -> None:
        """Write the full-load files of ``table``, every row stamped with the load time ``at``."""
        ordered = [tuple(rows[k][c] for c in COLUMNS[table]) for k in sorted(rows)]
        size = max(self.fmt.load_file_rows, 1)
        prefix = self._prefix(None, ts_text(at))
        for n, first in enumerate(range(0, len(ordered), size), start=1):
            lines = [prefix + list(v) for v in ordered[first : first + size]]
            self._write(table, f"LOAD{n:08X}.csv", lines, cdc=False)
            self.rows[table]["load"] += len(lines)

    def write_cdc(self, log: list[RowChange], flush: datetime) -> None:
        by_table: dict[str, list[list[str | None]]] = defaultdict(list)
        for change in log:
            by_table[change.table].append(
                self._prefix(change.op, ts_text(change.commit)) + list(change.values)
            )
            self.rows[change.table][change.op] += 1
            self.commits.append(change.commit)
        for table in TABLES:
            if by_table[table]:
                self._write(table, cdc_file_name(flush), by_table[table], cdc=True)

    def _prefix(self, op: str | None, ts: str) -> list[str | None]:
        out: list[str | None] = [] if op is None else [op]
        return [*out, ts] if self.fmt.timestamp_column else out

    def _write(self, table: str, name: str, lines: list[list[str | None]], *, cdc: bool) -> None:
        target = self.folder / self.fmt.schema / table / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise FileExistsError(f"{target} exists: DMS never rewrites a file")
        tmp = target.with_name(f".tmp-{name}")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            out = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            if self.fmt.add_column_name:
                ts = [self.fmt.timestamp_column] if self.fmt.timestamp_column else []
                out.writerow([*(["Op"] if cdc else []), *ts, *COLUMNS[table]])
            out.writerows([NULL if v is None else v for v in line] for line in lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)  # readers see the whole file or nothing
        self.files.append(target)

    def summary(self, clock: datetime) -> GenerationSummary:
        return GenerationSummary(
            folder=self.folder,
            files=tuple(self.files),
            rows={t: dict(ops) for t, ops in self.rows.items()},
            first_commit=min(self.commits, default=None),
            last_commit=max(self.commits, default=None),
            clock=clock,
        )


def _feed_files(folder: Path, fmt: FeedFormat, table: str) -> Iterator[tuple[Path, bool]]:
    """(path, is_cdc) of one table's files in DMS order: LOAD files by counter, then CDC files by name."""
    base = folder / fmt.schema / table
    names = sorted(p.name for p in base.glob("*.csv") if not p.name.startswith(".")) if base.is_dir() else []
    for name in [n for n in names if n.startswith("LOAD")] + [n for n in names if not n.startswith("LOAD")]:
        yield base / name, not name.startswith("LOAD")


def _replay(folder: Path, fmt: FeedFormat) -> tuple[World, int]:
    """Rebuild the source state, id counters and clock from a feed; also count its CDC flushes."""
    world = World(rng=random.Random(0), now=DEFAULT_START)  # noqa: S311 - replaced by the caller
    latest: datetime | None = None
    flushes: set[str] = set()
    skip_ts = 1 if fmt.timestamp_column else 0
    for table in TABLES:
        cols, key = COLUMNS[table], KEY[table]
        for path, is_cdc in _feed_files(folder, fmt, table):
            if is_cdc:
                flushes.add(path.name)
                latest = _later(latest, datetime.strptime(path.name[:19], "%Y%m%d-%H%M%S%f"))
            with path.open(encoding="utf-8", newline="") as f:
                records = list(csv.reader(f))
            for record in records[1 if fmt.add_column_name else 0 :]:
                op = record[0] if is_cdc else "I"
                if skip_ts:  # the commit (CDC) or transfer (full load) time
                    latest = _later(latest, datetime.fromisoformat(record[int(is_cdc)]))
                values = record[int(is_cdc) + skip_ts :]
                if len(values) != len(cols):
                    raise ValueError(f"{path}: expected {len(cols)} columns, got {len(values)}")
                row = {c: None if v == NULL else v for c, v in zip(cols, values, strict=True)}
                k = int(str(row[key]))
                world.next_id[table] = max(world.next_id[table], k + 1)
                for c in TIMESTAMP_COLUMNS:
                    if row.get(c):
                        latest = _later(latest, datetime.fromisoformat(str(row[c])))
                if op == "D":
                    world.rows[table].pop(k, None)
                    if table == "payments":  # a voided payment may be restored under its key later
                        world.voided[k] = row
                else:
                    world.rows[table][k] = row
                    if table == "payments":
                        world.voided.pop(k, None)
    world.now = latest or DEFAULT_START
    return world, len(flushes)


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a
