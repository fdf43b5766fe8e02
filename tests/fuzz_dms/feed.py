"""A fuzz scenario: the endpoint settings, the tables, and a list of feed operations drawn from a seed.

Operations are what the shrinker removes one by one, so each stands alone: write one full-load file, one
CDC file or one CDC_TXN file (names are given when the scenario runs, in operation order, so any subset
still has increasing names), run the daemon to the end (``Run``), run it until a crash point kills it
(``Crash``), or kill it after a while (``Kill``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from tests.fuzz_dms.values import KINDS

TS_COLUMN = "dms_commit_ts"
CRASH_POINTS = ("mid_stage", "after_stage", "after_ack", "mid_merge", "after_merge", "mid_remove")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    kind: str  # a key of values.KINDS
    key: bool = False


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    columns: tuple[ColumnSpec, ...]

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.columns) if c.key)


@dataclass(frozen=True, slots=True)
class Layout:
    """The DMS endpoint settings of a scenario (see ``replicator.sources.dms.layout.DmsOptions``)."""

    parquet: bool = False
    gzip: bool = False
    header: bool = False
    timestamp: bool = True
    null: str = "NULL"
    delimiter: str = ","
    op_for_full_load: bool = False
    txn: bool = False  # PreserveTransactions: CDC rows of all tables in CDC_TXN files (CSV only)


@dataclass(frozen=True, slots=True)
class Row:
    """One row as written: ``op`` may be a bad Op; ``values`` may hold a bad value or the wrong count;
    ``raw`` replaces a CSV field's bytes (invalid UTF-8)."""

    op: str
    values: tuple[str | None, ...]
    ts: str = "2024-01-01 00:00:00.000000"
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class LoadFile:
    table: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class CdcFile:
    table: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class TxnFile:
    rows: tuple[tuple[str, Row], ...]  # (table, row) in commit order


@dataclass(frozen=True, slots=True)
class Run:
    """``replicator run --once`` to the end."""


@dataclass(frozen=True, slots=True)
class Crash:
    """``replicator run --once`` with ``REPLICATOR_CRASH_AT=point@nth`` (it may end before reaching it)."""

    point: str
    nth: int


@dataclass(frozen=True, slots=True)
class Kill:
    """``replicator run`` (the daemon), SIGKILLed after ``seconds``."""

    seconds: float


Op = LoadFile | CdcFile | TxnFile | Run | Crash | Kill


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    layout: Layout
    tables: tuple[TableSpec, ...]
    ops: tuple[Op, ...]
    # Batch size of each daemon run in turn: a restart that cuts batches elsewhere than the run before it
    # makes a change staged twice show up (as overlapping ledger ranges, or in the target).
    batch_rows: tuple[int, ...] = (20,)
    bad_kinds: frozenset[str] = field(default_factory=frozenset)


# Bad-row kinds a seed may write. "null_key" was issue 13's defect 5 (a NULL key blocked its table for good);
# ``--bad`` leaves kinds out when one is known to fail, so the others are still fuzzed.
BAD_KINDS = ("column_count", "unknown_op", "type", "bad_timestamp", "invalid_utf8", "null_key")
DEFAULT_BAD = frozenset(BAD_KINDS)


def generate(
    seed: int,
    *,
    kills: bool | None = None,
    timed_kills: bool = True,
    bad: frozenset[str] = DEFAULT_BAD,
    size: int = 1,
) -> Scenario:
    """A scenario from ``seed``: about ``size`` x 12 files of a few rows each. ``kills`` None: as drawn.
    Without ``timed_kills`` every kill is at a crash point, so a run is the same every time (a timed kill
    cuts batches where it happens to land)."""
    rnd = random.Random(seed)
    parquet = rnd.random() < 0.25
    layout = Layout(
        parquet=parquet,
        gzip=not parquet and rnd.random() < 0.3,
        header=not parquet and rnd.random() < 0.4,
        timestamp=rnd.random() < 0.7,
        null=rnd.choice(["NULL", "NULL", "", "\\N"]) if not parquet else "NULL",
        delimiter=rnd.choice([",", ",", "|", ";"]) if not parquet else ",",
        op_for_full_load=rnd.random() < 0.3,
    )
    if not parquet and not layout.header and rnd.random() < 0.25:
        layout = replace(layout, txn=True, gzip=False)
    kinds = bad if not parquet else bad & {"unknown_op", "null_key"}
    if not layout.timestamp:
        kinds -= {"bad_timestamp"}
    tables = tuple(_table(rnd, i) for i in range(rnd.choice([1, 2, 2, 3])))
    world = _World(rnd, tables, layout, kinds)
    ops: list[Op] = []
    for t in tables:
        for _ in range(rnd.randint(0, 2)):
            ops.append(LoadFile(t.name, world.rows(t, load=True)))
    if kills is None:
        kills = rnd.random() < 0.5
    for _ in range(rnd.randint(6, 12) * size):
        r = rnd.random()
        if r < 0.12:
            ops.append(Run())
        elif r < 0.22 and kills:
            if rnd.random() < 0.7 or not timed_kills:
                ops.append(Crash(rnd.choice(CRASH_POINTS), rnd.randint(1, 4)))
            else:
                ops.append(Kill(round(rnd.uniform(0.6, 2.5), 2)))
        elif layout.txn:
            ops.append(TxnFile(world.txn_rows()))
        else:
            t = rnd.choice(tables)
            ops.append(CdcFile(t.name, world.rows(t, load=False)))
    batch_rows = tuple(rnd.sample([3, 7, 20, 100], 3))  # consecutive runs never cut alike
    return Scenario(seed, layout, tables, tuple(ops), batch_rows=batch_rows, bad_kinds=kinds)


_NAMES = ("id", "Name", "amount total", "naïve", "select", 'q"uote', "Ümlaut", "day", "at", "flag", "note")


def _table(rnd: random.Random, i: int) -> TableSpec:
    key = [ColumnSpec("id", "bigint", key=True)]
    if rnd.random() < 0.3:
        key.append(ColumnSpec("region", "nvarchar(400)", key=True))
    others = [n for n in _NAMES if n not in ("id",)]
    rnd.shuffle(others)
    kinds = [k for k in KINDS if k != "bigint"] + ["bigint"]
    columns = [ColumnSpec(n, rnd.choice(kinds)) for n in others[: rnd.randint(1, 5)]]
    return TableSpec(f"t{i}_" + rnd.choice(["orders", "Kunden", "line_items", "ñandú"]), (*key, *columns))


class _World:
    """What exists at the source, so updates and deletes mostly hit keys that exist."""

    def __init__(
        self, rnd: random.Random, tables: tuple[TableSpec, ...], layout: Layout, bad: frozenset[str]
    ) -> None:
        self.rnd, self.layout, self.bad = rnd, layout, sorted(bad)
        self.keys: dict[str, list[tuple[str | None, ...]]] = {t.name: [] for t in tables}
        self.tables = {t.name: t for t in tables}
        self.clock = 0

    def rows(self, t: TableSpec, *, load: bool) -> tuple[Row, ...]:
        return tuple(self.row(t, load=load) for _ in range(self.rnd.randint(1, 8)))

    def txn_rows(self) -> tuple[tuple[str, Row], ...]:
        out = []
        for _ in range(self.rnd.randint(1, 10)):
            t = self.rnd.choice(list(self.tables.values()))
            out.append((t.name, self.row(t, load=False)))
        return tuple(out)

    def row(self, t: TableSpec, *, load: bool) -> Row:
        rnd = self.rnd
        self.clock += 1
        c = self.clock
        ts = f"2024-03-{1 + c // 3600 % 28:02d} 10:{c // 60 % 60:02d}:{c % 60:02d}.{c % 1_000_000:06d}"
        known = self.keys[t.name]
        op = "I" if load else rnd.choice("IIUUUDD")
        key = self._key(t) if op == "I" or not known else rnd.choice(known)
        values = list(self._values(t, key))
        if op == "D":
            if key in known:
                known.remove(key)
        elif key not in known:
            known.append(key)
        bad = rnd.choice(self.bad) if self.bad and rnd.random() < 0.12 else None
        raw = None
        if bad == "column_count":
            values = values[:-1] if rnd.random() < 0.5 else [*values, "extra"]
        elif bad == "unknown_op" and (not load or self.layout.op_for_full_load):
            op = rnd.choice(["X", "u", "", "II"])
        elif bad == "type":
            typed = [i for i, c in enumerate(t.columns) if KINDS[c.kind].bad and not c.key]
            if typed:
                i = rnd.choice(typed)
                values[i] = rnd.choice(KINDS[t.columns[i].kind].bad)
        elif bad == "bad_timestamp":
            ts = rnd.choice(["2024-13-01 00:00:00.000000", "soon"])
        elif bad == "invalid_utf8":
            raw = b"bad \xff\xfe bytes"
        elif bad == "null_key":
            values[rnd.choice(t.key)] = None
        return Row(op, tuple(values), ts, raw)

    def _key(self, t: TableSpec) -> tuple[str | None, ...]:
        rnd = self.rnd
        ids = rnd.randint(1, 12)  # a small key space: re-inserts, updates and deletes of the same keys
        key: list[str | None] = [str(ids)]
        if len(t.key) == 2:
            key.append(rnd.choice(["north", "s\u00fcd", "", "\U0001f469\u200d\U0001f52c", "a,b"]))
        return tuple(key)

    def _values(self, t: TableSpec, key: tuple[str | None, ...]) -> tuple[str | None, ...]:
        out: list[str | None] = list(key)
        for c in t.columns[len(key) :]:
            out.append(None if self.rnd.random() < 0.15 else KINDS[c.kind].good(self.rnd))
        return tuple(out)
