"""Seed -> workload: a pure function (no I/O) from a seed and a ``Profile`` to a ``Workload``.

A small model of the source (the keys each table holds, its columns) keeps the operations meaningful:
updates and deletes hit rows that exist, key changes move to keys never used, a rolled-back transaction or
savepoint leaves the model as it was. The model is only a guide: the comparison is between the source and
the target, never against the model, so an operation made pointless by shrinking is still a valid test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from tests.fuzz.ops import (
    BIG,
    AddColumn,
    AlterType,
    Big,
    BulkDelete,
    BulkInsert,
    BulkUpdate,
    Crash,
    Delete,
    DropColumn,
    Insert,
    Kill,
    Savepoint,
    Start,
    Step,
    Stmt,
    TableDef,
    Truncate,
    Txn,
    Update,
    Value,
    Wait,
    Workload,
    column_type,
)
from tests.fuzz.type_table import BY_NAME, DEFAULTABLE, REWRITES, TYPES, WIDER, WIDER_ON, wider
from tests.fuzz.types import FuzzType

# replicator.storage.faults' points when this was written (a point the code under test lacks never fires).
CRASH_POINTS = ("mid_stage", "after_stage", "after_ack", "mid_merge", "after_merge", "mid_remove")


@dataclass(frozen=True)
class Profile:
    """How big and how wild a workload is. ``max_bulk`` above 10,000 crosses the source's capture chunk."""

    steps: int = 60
    target: str = "duckdb"
    types: tuple[str, ...] = tuple(t.name for t in TYPES)
    crash_points: tuple[str, ...] = CRASH_POINTS
    max_initial_rows: int = 3000
    copy_load_chance: float = 0.2  # a table starts with 20k rows: the initial copy takes long enough to kill
    max_bulk: int = 12_000
    bulk_chance: float = 0.07
    kill_chance: float = 0.05
    crash_chance: float = 0.04
    wait_chance: float = 0.12  # pauses spread the workload over batches (a key change meets an older row)
    ddl_chance: float = 0.07
    rollback_chance: float = 0.1
    partition_chance: float = 0.25  # a table is partitioned (by range of id, or list of k)
    alter_type_chance: float = 0.35  # of column changes: ALTER COLUMN ... TYPE (widening, or narrowing back)
    default_chance: float = 0.5  # of columns added: with a constant DEFAULT (then NOT NULL in 30%)
    toast_max: int = 40_000  # characters of a Big value (Redshift's VARCHAR holds at most 65535 bytes)


class Keys:
    """A set of keys with O(1) add, remove and random choice (a list plus positions)."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, k: int) -> bool:
        return k in self.pos

    def add(self, k: int) -> None:
        if k not in self.pos:
            self.pos[k] = len(self.items)
            self.items.append(k)

    def remove(self, k: int) -> None:
        i = self.pos.pop(k, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def choice(self, rng: random.Random) -> int:
        return self.items[rng.randrange(len(self.items))]


@dataclass
class _Table:
    df: TableDef
    keys: Keys = field(default_factory=Keys)
    deleted: list[int] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    hot: list[int] = field(default_factory=list)  # keys written one at a time lately: their rows hold values
    types: dict[str, str] = field(default_factory=dict)  # column -> its type now, if ALTER TYPE changed it
    not_null: set[str] = field(default_factory=set)
    # A column was added with a DEFAULT: no ALTER that rewrites the table from then on (type_table.REWRITES).
    defaulted: bool = False

    def type_of(self, column: str) -> FuzzType:
        return BY_NAME[self.types[column]] if column in self.types else column_type(column)

    def key(self, rng: random.Random) -> int:
        """A key that exists, most often a hot one (a bulk row's TOASTed column is mostly NULL)."""
        if self.hot and rng.random() < 0.75:
            k = rng.choice(self.hot)
            if k in self.keys:
                return k
        return self.keys.choice(rng)

    def touch(self, k: int) -> None:
        self.hot.append(k)
        del self.hot[:-200]


@dataclass
class _Model:
    tables: dict[str, _Table]
    next_key: int = 1
    next_column: int = 0

    def copy(self) -> _Model:
        """A copy to go back to when a transaction or savepoint is rolled back (cheaper than deepcopy)."""
        tables = {}
        for name, t in self.tables.items():
            keys = Keys()
            keys.items, keys.pos = list(t.keys.items), dict(t.keys.pos)
            tables[name] = _Table(t.df, keys, list(t.deleted), list(t.columns), list(t.hot), dict(t.types),
                                  set(t.not_null), t.defaulted)  # fmt: skip
        return _Model(tables, self.next_key, self.next_column)

    def fresh(self, n: int = 1) -> int:
        k = self.next_key
        self.next_key += n
        return k


class _Gen:
    def __init__(self, seed: int, profile: Profile) -> None:
        self.rng = random.Random(seed)
        # The choices added with partitions, type changes and defaults: drawn apart, so a seed's tables and
        # first steps stay what they were before them.
        self.alt = random.Random(seed * 7919 + 1)
        self.p = profile
        self.types = [column_type(f"c_{n}") for n in profile.types]
        self.m = _Model({})

    # -- values ---------------------------------------------------------------------------------------

    def value(self, column: str, table: _Table | None = None) -> Value:
        r = self.rng
        if column == BIG:
            return None if r.random() < 0.2 else Big(r.randrange(2**31), r.randint(9000, self.p.toast_max))
        t = table.type_of(column) if table is not None else column_type(column)
        if r.random() < 0.2 and (table is None or column not in table.not_null):
            return None
        if t.name in ("text", "varchar", "varchar100") and r.random() < 0.1:
            return ""
        return t.value(r)

    def row(self, t: _Table) -> tuple[tuple[str, Value], ...]:
        cols = [c for c in t.columns if self.rng.random() < 0.85]
        if t.df.big and self.rng.random() < 0.6:
            cols.append(BIG)
        return tuple((c, self.value(c, t)) for c in cols)

    def some(self, t: _Table, *, big_chance: float) -> tuple[tuple[str, Value], ...]:
        cols = self.rng.sample(t.columns, min(len(t.columns), self.rng.randint(1, 3))) if t.columns else []
        if t.df.big and self.rng.random() < big_chance:
            cols.append(BIG)
        return tuple((c, self.value(c, t)) for c in cols)

    # -- tables ---------------------------------------------------------------------------------------

    def new_column(self, t: _Table, *, addable: bool = False, among: frozenset[str] | None = None) -> str:
        choices = [x for x in self.types if x.addable] if addable else self.types
        if among is not None and any(x.name in among for x in choices):
            choices = [x for x in choices if x.name in among]
        self.m.next_column += 1
        kind = self.rng.choice(choices)
        if addable:  # added mid-stream: the type of its OID, which may hold less on this target
            kind = BY_NAME[kind.added_as.get(self.p.target, kind.name)]
        return f"c{self.m.next_column}_{kind.name}"

    def tables(self) -> None:
        r = self.rng
        for i in range(r.randint(2, 4)):
            t = _Table(TableDef(f"t{i}", ()))
            t.columns = [self.new_column(t) for _ in range(r.randint(2, 7))]
            df = TableDef(f"t{i}", tuple(t.columns), big=r.random() < 0.7, composite=r.random() < 0.25,
                          identity_full=r.random() < 0.25, soft=r.random() < 0.15)  # fmt: skip
            if self.alt.random() < self.p.partition_chance:
                by = self.alt.choice(["range", "list", "list"]) if df.composite else "range"
                df = replace(df, partition=by)
            t.df = df
            self.m.tables[df.name] = t

    def initial(self) -> list[Step]:
        steps: list[Step] = []
        for t in self.m.tables.values():
            n = (
                20_000
                if self.rng.random() < self.p.copy_load_chance
                else self.rng.randint(0, self.p.max_initial_rows)
            )
            if n:
                steps.append(Txn((self.bulk_insert(t, n, big=n <= 300 and t.df.big),)))
            for _ in range(self.rng.randint(0, 5)):
                steps.append(Txn((self.insert(t),)))
        return steps

    # -- statements -----------------------------------------------------------------------------------

    def insert(self, t: _Table, key: int | None = None) -> Insert:
        k = self.m.fresh() if key is None else key
        t.keys.add(k)
        t.touch(k)
        return Insert(t.df.name, t.df.composite, k, self.row(t))

    def bulk_insert(self, t: _Table, n: int, *, big: bool) -> BulkInsert:
        first = self.m.fresh(n)
        for k in range(first, first + n):
            t.keys.add(k)
        return BulkInsert(t.df.name, t.df.composite, first, n, big)

    def move(self, t: _Table, old: int, new: int, *, big_chance: float = 0.15) -> Update:
        t.keys.remove(old)
        t.keys.add(new)
        t.touch(new)
        values = self.some(t, big_chance=big_chance) if self.rng.random() < 0.4 else ()
        return Update(t.df.name, t.df.composite, old, values, new_key=new)

    def stmt(self, t: _Table, depth: int = 0) -> list[Stmt]:
        r, name, comp = self.rng, t.df.name, t.df.composite
        if not t.keys or r.random() < 0.2:
            if t.deleted and r.random() < 0.3:
                return [self.insert(t, t.deleted.pop())]  # a re-insert of a key deleted earlier
            return [self.insert(t)]
        x = r.random()
        k = t.key(r)
        if x < 0.35:
            return [Update(name, comp, k, self.some(t, big_chance=0.25))]
        if x < 0.5:  # a key change, the TOASTed column mostly left alone
            return [self.move(t, k, self.m.fresh())]
        if x < 0.58:  # a chain a -> b -> c in one transaction
            b, c = self.m.fresh(), self.m.fresh()
            return [self.move(t, k, b), self.move(t, b, c)]
        if x < 0.64 and len(t.keys) > 1:  # a swap through a temporary key
            other = t.key(r)
            if other != k:
                tmp = self.m.fresh()
                return [self.move(t, k, tmp, big_chance=0), self.move(t, other, k, big_chance=0),
                        self.move(t, tmp, other, big_chance=0)]  # fmt: skip
        if x < 0.72:
            t.keys.remove(k)
            t.deleted.append(k)
            return [Delete(name, comp, k)]
        if x < 0.78:  # a delete and a re-insert of the same key
            t.keys.remove(k)
            return [Delete(name, comp, k), self.insert(t, k)]
        if x < 0.84:  # a key change followed by an update or a delete of the new key
            new = self.m.fresh()
            first = self.move(t, k, new)
            if r.random() < 0.5:
                return [first, Update(name, comp, new, self.some(t, big_chance=0.2))]
            t.keys.remove(new)
            return [first, Delete(name, comp, new)]
        if x < 0.88 and t.deleted:  # a key change into a key deleted earlier
            return [self.move(t, k, t.deleted.pop())]
        if x < 0.95 and depth == 0:
            saved = self.m.copy()
            inner = [s for _ in range(r.randint(1, 3)) for s in self.stmt(self.pick(), depth + 1)]
            rollback = r.random() < 0.5
            if rollback:
                self.restore(saved)
            return [Savepoint(tuple(inner), rollback)]
        if x < 0.97:
            t.keys, t.deleted = Keys(), []
            return [Truncate(name)]
        return (
            [Update(name, comp, k, ())]
            if not t.columns
            else [Update(name, comp, k, self.some(t, big_chance=0))]
        )

    def restore(self, saved: _Model) -> None:
        # Keys and columns go back; fresh keys and column numbers stay used (never reused).
        next_key, next_column = self.m.next_key, self.m.next_column
        self.m = saved
        self.m.next_key, self.m.next_column = next_key, next_column

    def pick(self) -> _Table:
        return self.m.tables[self.rng.choice(sorted(self.m.tables))]

    # -- steps ----------------------------------------------------------------------------------------

    def txn(self) -> Txn:
        r = self.rng
        saved = self.m.copy()
        n = r.choice([1, 1, 2, 3, 5, 8, 20])
        stmts = [s for _ in range(n) for s in self.stmt(self.pick())]
        rollback = r.random() < self.p.rollback_chance
        if rollback:
            self.restore(saved)
        return Txn(tuple(stmts), rollback)

    def bulk(self) -> Txn:
        r, t = self.rng, self.pick()
        n = r.choice([100, 1000, 5000, 9999, 10_000, 10_001, self.p.max_bulk])
        x = r.random()
        if x < 0.5 or not t.keys:
            return Txn((self.bulk_insert(t, min(n, self.p.max_bulk), big=n <= 100 and t.df.big),))
        lo = min(t.keys.items)
        hi = lo + min(n, self.p.max_bulk) - 1
        if x < 0.7:
            col = r.choice([*t.columns, *([BIG] if t.df.big else [])]) if t.columns or t.df.big else None
            if col == BIG:
                col = None
            return Txn((BulkUpdate(t.df.name, t.df.composite, lo, hi, column=col),))
        if x < 0.85:  # many keys move at once, the other columns (TOASTed ones too) unchanged
            shift = self.m.fresh(hi - lo + 1) - lo
            for k in range(lo, hi + 1):
                if k in t.keys:
                    t.keys.remove(k)
                    t.keys.add(k + shift)
            return Txn((BulkUpdate(t.df.name, t.df.composite, lo, hi, shift=shift),))
        for k in range(lo, hi + 1):
            t.keys.remove(k)
        return Txn((BulkDelete(t.df.name, lo, hi),))

    def ddl(self) -> Txn:
        t = self.pick()
        among = None
        if self.alt.random() < self.p.alter_type_chance:
            changed = self.alter_type(t)
            if changed is not None:
                return changed
            among = frozenset(WIDER_ON.get(self.p.target, WIDER))  # a column to widen later
        elif self.alt.random() < self.p.default_chance:
            among = DEFAULTABLE
        if among is None and t.columns and self.rng.random() < 0.4:
            col = self.rng.choice(t.columns)
            t.columns.remove(col)
            t.types.pop(col, None)
            t.not_null.discard(col)
            return Txn((DropColumn(t.df.name, col),))
        col = self.new_column(t, addable=True, among=among)
        t.columns.append(col)
        add = AddColumn(t.df.name, col)
        kind = column_type(col)
        if kind.name in DEFAULTABLE and among is DEFAULTABLE:
            # A constant: PostgreSQL keeps it as the column's "missing value" (no rewrite, no row sent).
            add = AddColumn(t.df.name, col, kind.value(self.alt), not_null=self.alt.random() < 0.3)
            t.defaulted = True
            if add.not_null:
                t.not_null.add(col)
        after = [self.insert(t)] if self.rng.random() < 0.5 else []  # a row using it in the same transaction
        return Txn((add, *after))

    def alter_type(self, t: _Table) -> Txn | None:
        """A widening of a column (then values only the wider type holds), or a narrowing back to the type
        it was created with (tried: undone at the source when a value does not fit). None when no column
        of ``t`` can change. After a column added with a DEFAULT, no change that rewrites the table."""
        options: list[tuple[str, str, bool]] = []
        for c in t.columns:
            base, now = column_type(c).name, t.type_of(c).name
            if t.defaulted and now in REWRITES:
                continue
            options += [(c, w, False) for w in wider(now, self.p.target)]
            if now != base and not t.defaulted and self.alt.random() < 0.6:
                options.append((c, base, True))
        if not options:
            return None
        col, to, narrowing = self.alt.choice(options)
        if narrowing:
            t.types.pop(col)
        else:
            t.types[col] = to
        after: list[Stmt] = []
        if t.keys and self.rng.random() < 0.7:
            after.append(Update(t.df.name, t.df.composite, t.key(self.rng), ((col, self.value(col, t)),)))
        if self.rng.random() < 0.6:
            after.append(self.insert(t))
        return Txn((AlterType(t.df.name, col, to, attempt=narrowing), *after))

    def steps(self) -> list[Step]:
        r, p = self.rng, self.p
        steps = self.initial()
        steps.append(Start())
        if r.random() < 0.3:  # a kill during the initial copy
            steps.append(Kill(round(r.uniform(0.0, 1.5), 2)))
        for _ in range(p.steps):
            x = r.random()
            if x < p.kill_chance:
                steps.append(Kill(round(r.uniform(0.0, 2.0), 2)))
            elif x < p.kill_chance + p.crash_chance and p.crash_points:
                steps.append(Crash(f"{r.choice(p.crash_points)}@{r.randint(1, 4)}"))  # the n-th time there
            elif x < p.kill_chance + p.crash_chance + p.wait_chance:
                steps.append(Wait(round(r.uniform(0.1, 1.0), 2)))
            elif x < p.kill_chance + p.crash_chance + p.wait_chance + p.ddl_chance:
                steps.append(self.ddl())
            elif x < p.kill_chance + p.crash_chance + p.wait_chance + p.ddl_chance + p.bulk_chance:
                steps.append(self.bulk())
            else:
                steps.append(self.txn())
        return steps


def generate(seed: int, profile: Profile | None = None) -> Workload:
    """The workload of ``seed``: the same seed and profile always give the same operations."""
    g = _Gen(seed, profile or Profile())
    g.tables()
    steps = g.steps()
    tables = tuple(t.df for t in sorted(g.m.tables.values(), key=lambda t: t.df.name))
    return Workload(seed, tables, tuple(steps))  # each TableDef keeps the columns it was created with
