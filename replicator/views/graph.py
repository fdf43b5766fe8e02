"""View definitions from ``schemas/views/*.sql`` and the dependency graph between them.

One view a file, named ``<schema>.<view>.sql``, holding one SELECT written in PostgreSQL syntax (it is
parsed with sqlglot and rendered for each warehouse). A few leading comment lines form a header::

    -- refresh: on change                   (the default)
    -- refresh: at most every 60 seconds    (debounce: refreshed when dirty and 60 s passed since the last)
    -- refresh: schedule */15 * * * *       (cron, UTC: refreshed when dirty and a fire time has passed)
    -- unique key: plan_id                  (lets PostgreSQL refresh CONCURRENTLY; derived from GROUP BY)
    -- mode: full                           (never maintain incrementally, even when the form allows it)

Dependencies come from the SQL itself: every table a view reads, base table or another view. Views are
ordered so that each comes after everything it reads; a cycle or an unknown table is refused at start-up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import sqlglot
from croniter import CroniterBadDateError, CroniterError, croniter
from sqlglot import exp
from sqlglot.errors import ParseError

from replicator.model import TableId

SOURCE_DIALECT = "postgres"  # the dialect view files are written in


class ViewError(ValueError):
    """A view file that cannot be used: bad header, SQL that does not parse, unknown table, cycle."""


# -- refresh policy ------------------------------------------------------------------------------------


_ONE_VALUE_RANGE = re.compile(r"(?<![\d-])(\d+)-\1(?:/\d+)?(?![\d-])")


@dataclass(frozen=True, slots=True)
class Cron:
    """Five-field cron (minute hour day-of-month month day-of-week, UTC), parsed and stepped by croniter.

    A day-of-month and a day-of-week both given must both match (``croniter``'s ``day_or=False``), as they
    did before croniter; classic cron would take either.
    """

    expression: str  # the five fields, single-spaced

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = text.split()
        if len(fields) != 5:
            raise ViewError(f"schedule {text!r} needs 5 fields: minute hour day month weekday")
        # croniter 7 reads a one-value range ("9-9", "21-21/5") as the whole field: write it as the value
        expression = " ".join(_ONE_VALUE_RANGE.sub(r"\1", f) for f in fields)
        try:
            croniter(expression, 0, day_or=False).get_next(float)
        except CroniterBadDateError:
            raise ViewError(f"schedule {text!r} never fires (no date matches it)") from None
        except CroniterError as exc:
            raise ViewError(f"schedule {text!r} is not a valid cron expression: {exc}") from None
        return cls(expression)

    def fired_between(self, after: float, until: float) -> bool:
        """Whether a fire time lies in ``(after, until]`` (epoch seconds)."""
        return bool(croniter(self.expression, after, day_or=False).get_next(float) <= until)


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When a dirty view (one whose inputs changed) may be refreshed."""

    kind: Literal["on_change", "interval", "schedule"] = "on_change"
    seconds: float = 0.0
    cron: Cron | None = None

    @classmethod
    def parse(cls, text: str) -> RefreshPolicy:
        t = " ".join(text.lower().split())
        if t in ("on change", "after every change", "on_change"):
            return cls()
        m = re.fullmatch(r"(?:at most )?every (\d+(?:\.\d+)?) ?(s|sec|secs|second|seconds|m|min|minutes?)", t)
        if m:
            seconds = float(m.group(1)) * (60 if m.group(2).startswith("m") else 1)
            return cls("interval", seconds=seconds)
        if t.startswith("schedule "):
            return cls("schedule", cron=Cron.parse(t.removeprefix("schedule ")))
        raise ViewError(
            f"refresh policy {text!r}: use 'on change', 'at most every N seconds' or 'schedule <cron>'"
        )

    def due(self, *, last_refresh: float | None, now: float) -> bool:
        """Whether a dirty view may be refreshed at ``now`` (epoch seconds)."""
        if self.kind == "on_change" or last_refresh is None:
            return True
        if self.kind == "interval":
            return now - last_refresh >= self.seconds
        assert self.cron is not None
        return self.cron.fired_between(last_refresh, now)

    def __str__(self) -> str:
        if self.kind == "interval":
            return f"at most every {self.seconds:g} s"
        return "schedule" if self.kind == "schedule" else "on change"


# -- one view ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewDef:
    """One view file, parsed. ``select`` is the sqlglot tree (do not mutate it: ``copy()`` first)."""

    name: TableId
    sql: str
    select: exp.Query = field(compare=False, repr=False)
    depends_on: frozenset[TableId]
    policy: RefreshPolicy = RefreshPolicy()
    unique_key: tuple[str, ...] = ()
    force_full: bool = False
    path: Path | None = None

    @property
    def definition_hash(self) -> str:
        """Changes when the SQL or the header does: the view is then rebuilt."""
        text = f"{self.select.sql(SOURCE_DIALECT)}\x00{self.unique_key}\x00{self.force_full}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def render(self, dialect: str) -> str:
        """The SELECT in ``dialect`` (sqlglot's name: postgres, duckdb, redshift)."""
        return self.select.sql(dialect=dialect, comments=False)


def parse_view(name: TableId, text: str, *, path: Path | None = None) -> ViewDef:
    """Parse one view file's text. Raises ``ViewError`` with the reason."""
    where = str(path or name)
    header: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("--"):
            break
        key, colon, value = s[2:].partition(":")
        if colon:
            header[key.strip().lower()] = value.strip()
    try:
        statements = [s for s in sqlglot.parse(text, read=SOURCE_DIALECT) if s is not None]
    except ParseError as exc:
        raise ViewError(f"{where}: SQL does not parse: {exc}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ViewError(f"{where}: a view file holds exactly one SELECT")
    select = statements[0]
    try:
        policy = RefreshPolicy.parse(header.get("refresh", "on change"))
    except ViewError as exc:
        raise ViewError(f"{where}: {exc}") from None
    unique = tuple(c.strip() for c in header.get("unique key", "").split(",") if c.strip())
    mode = header.get("mode", "auto").lower()
    if mode not in ("auto", "full", "incremental"):
        raise ViewError(f"{where}: mode must be auto, full or incremental, not {mode!r}")
    return ViewDef(
        name=name,
        sql=text,
        select=select,
        depends_on=frozenset(referenced_tables(select, where=where)),
        policy=policy,
        unique_key=unique or derived_unique_key(select),
        force_full=mode == "full",
        path=path,
    )


def referenced_tables(select: exp.Expr, *, where: str = "view") -> set[TableId]:
    """Every schema-qualified table the query reads, CTE names excluded. An unqualified name that is not a
    CTE is refused: the schema is part of a replicated table's identity."""
    ctes = {c.alias_or_name for c in select.find_all(exp.CTE)}
    out: set[TableId] = set()
    for t in select.find_all(exp.Table):
        if not t.name:  # table functions and the like
            raise ViewError(f"{where}: reads from {t.sql()!r}, which is not a table")
        if not t.db:
            if t.name in ctes:
                continue
            raise ViewError(f"{where}: table {t.name!r} must be written as schema.table")
        out.add(TableId(t.db, t.name))
    return out


def derived_unique_key(select: exp.Query) -> tuple[str, ...]:
    """Output column names that identify a row of an aggregate view: its GROUP BY items, when each is
    an output column (by position, alias or the same expression). Empty when that cannot be shown."""
    if not isinstance(select, exp.Select):
        return ()
    group = select.args.get("group")
    if group is None or select.args.get("distinct"):
        return ()
    outputs = list(select.expressions)
    names: list[str] = []
    for g in group.expressions:
        hit: exp.Expression | None = None
        if isinstance(g, exp.Literal) and g.is_int and 1 <= int(g.this) <= len(outputs):
            hit = outputs[int(g.this) - 1]
        else:
            for o in outputs:
                if o.unalias() == g or (isinstance(g, exp.Column) and not g.table and o.alias == g.name):
                    hit = o
                    break
        if hit is None or not hit.alias_or_name:
            return ()
        names.append(hit.alias_or_name)
    return tuple(names)


# -- the set of views ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewCatalog:
    """All views, in dependency order (each after everything it reads)."""

    views: tuple[ViewDef, ...]

    def __post_init__(self) -> None:
        names = [v.name for v in self.views]
        if len(set(names)) != len(names):
            raise ViewError("a view is defined twice")

    def get(self, name: TableId) -> ViewDef:
        for v in self.views:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def names(self) -> frozenset[TableId]:
        return frozenset(v.name for v in self.views)

    def base_tables(self, view: ViewDef) -> frozenset[TableId]:
        """The replicated tables ``view`` reads, directly or through other views."""
        out: set[TableId] = set()
        for dep in view.depends_on:
            out |= self.base_tables(self.get(dep)) if dep in self.names else {dep}
        return frozenset(out)

    def upstream_views(self, view: ViewDef) -> list[ViewDef]:
        """Views ``view`` reads, directly or transitively, in dependency order."""
        seen: set[TableId] = set()
        stack = [d for d in view.depends_on if d in self.names]
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(x for x in self.get(d).depends_on if x in self.names)
        return [v for v in self.views if v.name in seen]

    def dependents(self, changed: Iterable[TableId]) -> list[ViewDef]:
        """Views reading any of ``changed`` (tables or views), directly or transitively, in order."""
        hit = set(changed)
        out = []
        for v in self.views:  # dependency order: a view's inputs are settled before it is looked at
            if v.depends_on & hit:
                out.append(v)
                hit.add(v.name)
        return out


def order_views(views: Iterable[ViewDef], tables: Collection[TableId]) -> ViewCatalog:
    """Check every dependency is a known table or view and sort views so inputs come first (ties by name).
    Raises ``ViewError`` on an unknown table or a cycle."""
    by_name = {v.name: v for v in views}
    known = set(tables) | set(by_name)
    for v in by_name.values():
        unknown = sorted(str(d) for d in v.depends_on - known)
        if unknown:
            raise ViewError(f"view {v.name} reads {', '.join(unknown)}: not a replicated table or a view")
        if v.name in tables:
            raise ViewError(f"view {v.name} has the name of a replicated table")
    ordered: list[ViewDef] = []
    done: set[TableId] = set()
    pending = dict(sorted(by_name.items()))
    while pending:
        ready = [n for n, v in pending.items() if not (v.depends_on & set(pending))]
        if not ready:
            raise ViewError(f"views depend on each other in a cycle: {', '.join(map(str, pending))}")
        for n in ready:
            ordered.append(pending.pop(n))
            done.add(n)
    return ViewCatalog(tuple(ordered))


def load_views(folder: Path, tables: Collection[TableId]) -> ViewCatalog:
    """Every ``*.sql`` in ``folder`` (``schemas/views``); an absent folder means no views."""
    if not folder.is_dir():
        return ViewCatalog(())
    views = []
    for path in sorted(folder.glob("*.sql")):
        try:
            name = TableId.parse(path.stem)
        except ValueError:
            raise ViewError(f"{path}: name view files <schema>.<view>.sql") from None
        views.append(parse_view(name, path.read_text(), path=path))
    return order_views(views, tables)
