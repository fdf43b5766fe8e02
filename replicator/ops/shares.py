"""Scale-out: the tasks running one config share its tables, each unit of work under a fenced lease.

A *unit* is what one task owns whole: a group of tables (DMS, SQL Server: a table, or the tables a view reads
together; DMS with ``PreserveTransactions``: the one feed) or a PostgreSQL shard (one slot is read by one
connection). Two tables in ``_replicator`` coordinate the tasks of a scope, all by compare-and-set with the
warehouse's clock:

- ``members``: every live task heartbeats its row; a task that stops heartbeating expires; a task that drains
  (SIGTERM) deletes its row and releases its units first.
- ``claims``: one row per unit: owner, fencing ``token``, expiry. A unit is claimed only when free, expired,
  released or already ours; every change of owner increments the token.

Each task computes the same *desired* assignment from the live members and the units (``assign``: balanced
rendezvous hashing: each unit goes to the member that scores it highest among those with room, so loads
differ by at most one and few units move when a task joins or leaves). A task claims the free units it
should own, releases the ones it should not (at the end of a term, once its pipeline has stopped), and
starts a new term whenever the desired set changes (``ShareKeeper.rebalance``): within one renew interval of
a join or a drain, within one lease period of a death.

Fencing: ``UnitFence`` checks, inside every merge transaction, that this task still holds the batch's unit
with the same token and an unexpired claim (PostgreSQL: ``FOR SHARE``, so a takeover waits for the merge
to commit). A task that lost a unit (stalled past its lease by GC, the network or SIGSTOP) can never commit
to its tables again. Staging and acknowledgements are guarded by the keeper's local deadline (``valid``):
a stalled task stops before it writes once its lease may have expired.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from replicator.config import Config
from replicator.model import TableId
from replicator.obs import metrics
from replicator.ops.control import SqlSession
from replicator.ops.lease import LeaseLost, create_tables, seconds_between
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.warehouses import STATE_SCHEMA

log = structlog.get_logger(__name__)

MEMBERS = TableId(STATE_SCHEMA, "members")
CLAIMS = TableId(STATE_SCHEMA, "claims")


def shared(cfg: Config) -> bool:
    """Whether the tasks of this config share the work (``lease.mode``)."""
    if cfg.lease.mode == "auto":
        return cfg.warehouse.kind != "duckdb"
    return cfg.lease.mode == "shared"


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    tables: frozenset[TableId]


def plan_units(
    kind: str, tables: Collection[TableId], groups: Mapping[TableId, str], *,
    shards: Mapping[int, Sequence[TableId]] | None = None, one_feed: bool = False,
) -> list[Unit]:  # fmt: skip
    """The units of work: PostgreSQL shards (``shards``), the whole feed (``one_feed``), else one per group
    of tables (``groups``: table -> group name, tables a view reads together share one)."""
    if kind == "postgres" and shards is not None:
        return [Unit(f"shard-{k}", frozenset(ts)) for k, ts in sorted(shards.items())]
    if one_feed:
        return [Unit("feed", frozenset(tables))]
    by_group: dict[str, set[TableId]] = {}
    for t in tables:
        by_group.setdefault(groups.get(t, str(t)), set()).add(t)
    return [Unit(g, frozenset(ts)) for g, ts in sorted(by_group.items())]


def config_units(cfg: Config) -> list[Unit]:
    """The units of work of ``cfg``'s tables (see ``plan_units``)."""
    from replicator import app as app_mod
    from replicator.sources import table_groups

    every = app_mod.load_schemas(cfg)
    groups = table_groups(every, app_mod.view_reads(cfg, every))
    kind = cfg.source.kind
    one_feed = kind == "dms" and cfg.source.dms.preserve_transactions
    pg = app_mod.shards(cfg, every) if kind == "postgres" else None
    return plan_units(kind, every, groups, shards=pg, one_feed=one_feed)


def ownership(store: ShareStore, units: Sequence[Unit]) -> list[dict[str, Any]]:
    """Every unit with its tables and its live owner (None: unowned now), for ``status`` and the console."""
    claims = store.claims()
    out = []
    for unit in units:
        c = claims.get(unit.name)
        live = c is not None and c.live
        out.append(
            {
                "unit": unit.name, "tables": sorted(str(t) for t in unit.tables),
                "owner": c.owner if c is not None and live else None,
                "endpoint": c.endpoint if c is not None and live else None,
                "token": c.token if c is not None else None,
            }
        )  # fmt: skip
    return out


def ownership_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``status``'s lines: how many units each task owns, and every unowned unit."""
    tasks: dict[str, int] = {}
    for r in rows:
        if r["owner"]:
            tasks[str(r["owner"])] = tasks.get(str(r["owner"]), 0) + 1
    lines = [f"{len(rows)} units of work, {len(tasks)} tasks:"]
    lines += [f"  {task}: {n} units" for task, n in sorted(tasks.items())]
    lines += [f"  UNOWNED {r['unit']} ({', '.join(r['tables'])})" for r in rows if not r["owner"]]
    return "\n".join(lines)


def _score(unit: str, member: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{unit}\0{member}".encode(), digest_size=8).digest(), "big")


def assign(units: Sequence[str], members: Sequence[str]) -> dict[str, str]:
    """Unit -> member: every unit to exactly one member, loads differing by at most one; the same answer on
    every task given the same members (order does not matter)."""
    if not members:
        return {}
    base, extra = divmod(len(units), len(members))
    load = dict.fromkeys(members, 0)
    out: dict[str, str] = {}
    for unit in sorted(units, key=lambda u: (_score(u, ""), u)):
        for member in sorted(members, key=lambda m: (_score(unit, m), m), reverse=True):
            if load[member] < base or (load[member] == base and extra > 0):
                if load[member] == base:
                    extra -= 1
                load[member] += 1
                out[unit] = member
                break
    return out


@dataclass(frozen=True, slots=True)
class Claim:
    unit: str
    owner: str
    token: int
    live: bool
    endpoint: str


def _ms(seconds: float) -> str:
    return f"INTERVAL '{int(seconds * 1000)} milliseconds'"


class ShareStore:
    """The ``members`` and ``claims`` rows of one scope, for one task (``owner``)."""

    def __init__(
        self, session: SqlSession, *, scope: str, owner: str, ttl_seconds: float, endpoint: str,
        now: str = "CURRENT_TIMESTAMP", lock: str = "",
    ):  # fmt: skip
        """``now``, ``lock``: the warehouse's clock and the row lock taken before an expiry is computed
        (``lease.clock_for``, ``lease.lock_for``; see ``LeaseStore``)."""
        self.session, self.scope, self.owner, self.ttl, self.endpoint, self.now, self.lock = (
            session, scope, owner, ttl_seconds, endpoint, now, lock,
        )  # fmt: skip
        self.remaining: float | None = None  # seconds the claims are valid for, as of the last renewal
        self._scope = f"{quote_ident('scope')} = {quote_literal(scope)}"
        self._me = quote_literal(owner)

    def ensure(self) -> None:
        ddl = [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}",
            f"CREATE TABLE IF NOT EXISTS {quote_table(MEMBERS)} ("
            '"scope" text NOT NULL, "task" text NOT NULL, "endpoint" text, "joined_at" timestamptz NOT NULL,'
            ' "heartbeat_at" timestamptz NOT NULL, "expires_at" timestamptz NOT NULL,'
            ' PRIMARY KEY ("scope", "task"))',
            f"CREATE TABLE IF NOT EXISTS {quote_table(CLAIMS)} ("
            '"scope" text NOT NULL, "unit" text NOT NULL, "owner" text NOT NULL, "endpoint" text,'
            ' "token" bigint NOT NULL, "claimed_at" timestamptz NOT NULL,'
            ' "heartbeat_at" timestamptz NOT NULL, "expires_at" timestamptz NOT NULL,'
            ' PRIMARY KEY ("scope", "unit"))',
        ]
        create_tables(self.session, ddl)

    # -- members -----------------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        t, now = quote_table(MEMBERS), self.now
        where = f"{self._scope} AND task = {self._me}"
        self.session.transact(
            [
                f"UPDATE {t} SET heartbeat_at = {now}, expires_at = {now} + {_ms(self.ttl)} WHERE {where}",
                f"INSERT INTO {t} (scope, task, endpoint, joined_at, heartbeat_at, expires_at)"
                f" SELECT {quote_literal(self.scope)}, {self._me}, {quote_literal(self.endpoint)}, {now},"
                f" {now}, {now} + {_ms(self.ttl)} WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE {where})",
                # Rows of tasks dead for an hour are only noise in ``status``.
                f"DELETE FROM {t} WHERE {self._scope} AND expires_at < {now} - INTERVAL '1 hour'",
            ]
        )

    def members(self) -> list[str]:
        rows = self.session.query(
            f"SELECT task FROM {quote_table(MEMBERS)} WHERE {self._scope} AND expires_at > {self.now}"
        )
        return sorted(str(r[0]) for r in rows)

    def leave(self) -> None:
        """Drain: release every unit of this task and remove it from the members (the others rebalance)."""
        self.session.transact(
            [
                f"UPDATE {quote_table(CLAIMS)} SET expires_at = {self.now} - {_ms(1)}"
                f" WHERE {self._scope} AND owner = {self._me}",
                f"DELETE FROM {quote_table(MEMBERS)} WHERE {self._scope} AND task = {self._me}",
            ]
        )

    # -- claims ------------------------------------------------------------------------------------------

    def claim(self, unit: str, *, dead: Collection[str] = ()) -> int | None:
        """Take ``unit`` when it is free, expired, released, ours, or held by one of ``dead`` (owners known
        to be gone: a process of this host that no longer exists); its fencing token, or None."""
        t, now, u = quote_table(CLAIMS), self.now, quote_literal(unit)
        where = f"{self._scope} AND unit = {u}"
        gone = f" OR owner IN ({', '.join(quote_literal(d) for d in sorted(dead))})" if dead else ""
        insert = (
            f"INSERT INTO {t} (scope, unit, owner, endpoint, token, claimed_at, heartbeat_at, expires_at)"
            f" SELECT {quote_literal(self.scope)}, {u}, '', '', 0, {now}, {now}, {now} - {_ms(1)}"
            f" WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE {where})"
        )
        take = (
            f"UPDATE {t} SET token = CASE WHEN owner = {self._me} THEN token ELSE token + 1 END,"
            f" claimed_at = CASE WHEN owner = {self._me} THEN claimed_at ELSE {now} END,"
            f" owner = {self._me}, endpoint = {quote_literal(self.endpoint)}, heartbeat_at = {now},"
            f" expires_at = {now} + {_ms(self.ttl)}"
            f" WHERE {where} AND (owner = {self._me} OR expires_at < {now}{gone})"
        )
        lock = f"SELECT 1 FROM {t} WHERE {where}{self.lock}"
        try:
            rows = self.session.transact(
                [insert, lock, take], check=f"SELECT owner, token FROM {t} WHERE {where}"
            )
        except Exception as exc:  # two first claimers racing on the INSERT: not ours this time
            log.info("claim_attempt_failed", unit=unit, error=f"{type(exc).__name__}: {exc}")
            return None
        if rows and rows[0][0] == self.owner:
            return int(rows[0][1])
        return None

    def renew(self, held: Mapping[str, int]) -> set[str]:
        """Extend the claims in ``held`` (unit -> token); returns the units no longer held with that token."""
        if not held:
            return set()
        t, now = quote_table(CLAIMS), self.now
        units = ", ".join(quote_literal(u) for u in sorted(held))
        mine = f"{self._scope} AND owner = {self._me} AND unit IN ({units})"
        rows = self.session.transact(
            [
                f"SELECT 1 FROM {t} WHERE {mine}{self.lock}",
                f"UPDATE {t} SET heartbeat_at = {now}, expires_at = {now} + {_ms(self.ttl)} WHERE {mine}",
            ],
            check=f"SELECT unit, token, expires_at, {now} FROM {t} WHERE {mine}",
        )
        still = {str(u): int(tok) for u, tok, _, _ in rows}
        left = [seconds_between(e, n) for u, tok, e, n in rows if held.get(str(u)) == int(tok)]
        self.remaining = min(left) if left else None
        return {u for u, tok in held.items() if still.get(u) != tok}

    def release(self, units: Collection[str]) -> None:
        if not units:
            return
        names = ", ".join(quote_literal(u) for u in sorted(units))
        self.session.transact(
            [
                f"UPDATE {quote_table(CLAIMS)} SET expires_at = {self.now} - {_ms(1)}"
                f" WHERE {self._scope} AND owner = {self._me} AND unit IN ({names})"
            ]
        )

    def claims(self) -> dict[str, Claim]:
        rows = self.session.query(
            f"SELECT unit, owner, token, expires_at > {self.now}, endpoint FROM {quote_table(CLAIMS)}"
            f" WHERE {self._scope}"
        )
        return {
            str(u): Claim(str(u), str(o), int(tok), bool(live), str(e or "")) for u, o, tok, live, e in rows
        }


class ShareKeeper:
    """Heartbeats the member row and renews this task's claims every ``interval`` on its own session.

    ``lost``: a claim was lost (another task holds it, or renewals failed until it could expire): the term
    must stop at once. ``rebalance``: the desired assignment differs from what this task holds (a task
    joined, died or drained): the term ends at its next round and the next one claims and releases.
    ``valid()``: false once the claims may have expired by the local clock (the term must not write).
    """

    def __init__(
        self, store: ShareStore, units: Sequence[str], held: Mapping[str, int], *, interval: float,
        gone: Callable[[str], bool] = lambda owner: False,
    ):  # fmt: skip
        """``gone(owner)``: the member is known dead (its rows have not expired yet): not counted."""
        self.store, self.units, self.interval, self.gone = store, list(units), interval, gone
        self.held = dict(held)
        self.lost, self.rebalance = threading.Event(), threading.Event()
        self._stop = threading.Event()
        self._valid_until = time.monotonic() + store.ttl - interval
        self._turns = 0  # renewal attempts finished (under ``_turn``)
        self._turn = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="share-keeper", daemon=True)

    def valid(self) -> bool:
        return time.monotonic() < self._valid_until and not self.lost.is_set()

    def start(self) -> None:
        metrics.UNITS_OWNED.set(len(self.held))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)

    def check(self) -> None:
        """Raise ``LeaseLost`` when this task may no longer write for its units (before staging, acking).

        Past the local deadline, the next renewal decides: after a merge longer than the lease, the renewal
        waited for that merge's row lock and now completes (its expiry written after the wait); after a stall
        (SIGSTOP), it finds the claims taken. Only when it does not come in time is the task stopped."""
        if self.valid():
            return
        with self._turn:
            seen = self._turns
            self._turn.wait_for(lambda: self._turns > seen, timeout=self.store.ttl + self.interval)
        if not self.valid():
            raise LeaseLost("this task's claims may have expired (it stalled or cannot renew); stopping")

    def _finished(self) -> None:
        with self._turn:
            self._turns += 1
            self._turn.notify_all()

    def _run(self) -> None:
        try:
            self._renew_until_stopped()
        finally:
            self._finished()  # nobody waits in ``check`` for a keeper that has ended

    def _renew_until_stopped(self) -> None:
        bound = log.bind(owner=self.store.owner)
        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat()
                gone = self.store.renew(self.held)
                members = [m for m in self.store.members() if m == self.store.owner or not self.gone(m)]
                desired = desired_units(self.units, members, self.store.owner)
                claims = self.store.claims()
                observe(claims, self.units)
            except Exception as exc:
                metrics.ERRORS.labels(stage="lease", kind=type(exc).__name__).inc()
                bound.warning("claims_renew_failed", error=f"{type(exc).__name__}: {exc}")
                if time.monotonic() >= self._valid_until:
                    bound.error("claims_lost", reason="renewals failed until the claims could expire")
                    self.lost.set()
                    return
                self._finished()
                continue
            if gone:
                bound.error("claims_lost", units=sorted(gone), reason="another task holds them now")
                self.lost.set()
                return
            # From the expiry the warehouse wrote (after any wait for a merge's row lock), not from ``sent``.
            left = self.store.remaining if self.store.remaining is not None else self.store.ttl
            self._valid_until = time.monotonic() + min(left, self.store.ttl) - self.interval
            self._finished()
            # A new term when there is something to release, or a unit to take that is free now (one still
            # held by a live task waits for it: its owner releases it at the end of its round).
            extra = set(self.held) - desired
            free = {u for u in desired - set(self.held) if not (u in claims and claims[u].live)}
            if (extra or free) and not self.rebalance.is_set():
                bound.info("rebalance_needed", holding=sorted(self.held), desired=sorted(desired))
                self.rebalance.set()


def desired_units(units: Sequence[str], members: Sequence[str], me: str) -> set[str]:
    everyone = sorted({*members, me})  # this task counts even before its first heartbeat is visible
    return {u for u, m in assign(units, everyone).items() if m == me}


def observe(claims: Mapping[str, Claim], units: Sequence[str]) -> None:
    """The ``replicator_units_unowned`` gauge: units of the config with no live owner now."""
    metrics.UNITS_CONFIGURED.set(len(units))
    metrics.UNITS_UNOWNED.set(sum(1 for u in units if not (u in claims and claims[u].live)))


class UnitFence:
    """A merge hook: a batch commits only while this task holds its table's unit with the same token."""

    def __init__(self, store: ShareStore, unit_of: Mapping[TableId, str], tokens: Mapping[str, int], *,
                 row_lock: str = "", now: str = "CURRENT_TIMESTAMP") -> None:  # fmt: skip
        """``now``: ``lease.fence_clock_for`` the warehouse (the merge transaction's start)."""
        self.store, self.unit_of, self.tokens, self.row_lock = store, dict(unit_of), dict(tokens), row_lock
        self.now = now

    def sql(self, table: TableId) -> str:
        unit = self.unit_of[table]
        return (
            f"SELECT 1 FROM {quote_table(CLAIMS)}"
            f" WHERE {quote_ident('scope')} = {quote_literal(self.store.scope)}"
            f" AND unit = {quote_literal(unit)} AND owner = {quote_literal(self.store.owner)}"
            f" AND token = {int(self.tokens[unit])} AND expires_at > {self.now}{self.row_lock}"
        )

    def before_merge(self, ctx: Any) -> None:
        table = ctx.manifest.table
        if table not in self.unit_of or not ctx.query(self.sql(table)):
            raise LeaseLost(f"this task no longer owns {table} (its claim moved on); merge rolled back")

    def after_merge(self, ctx: Any) -> None:
        return None


def take_over_slots(dsn: str, slots: Collection[str]) -> None:
    """End the replication connections still reading ``slots`` (a stalled previous owner's: the claim is
    ours now, and a slot admits one reader). Best effort: a server that refuses leaves the slot to
    ``wal_sender_timeout``."""
    if not slots:
        return
    import psycopg2

    with contextlib.suppress(Exception), contextlib.closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT slot_name, pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE active AND slot_name = ANY(%s)",
                (sorted(slots),),
            )
            for name, done in cur.fetchall():
                log.warning("slot_reader_terminated", slot=name, terminated=bool(done))
