"""The single-writer lease: one row per scope in ``_replicator.leases``, taken by compare-and-set.

Two tasks on the same config (an ECS deployment overlapping old and new tasks) must never both merge. The
one holding the lease works; the other waits, not ready, and takes the lease over once the holder releases
it (clean stop) or stops renewing it (killed, partitioned) and it expires.

- Times are the warehouse's clock (``clock_for``: PostgreSQL's ``clock_timestamp()``, the time the statement
  runs, not its transaction's start), so tasks with skewed clocks still agree.
- Taking and renewing is one UPDATE guarded by ``owner = me OR expires_at < now``; concurrent takers are
  serialised by the row lock (PostgreSQL re-checks the guard after the first commits), so exactly one wins.
- The renewal runs in a thread on its own connection (``LeaseKeeper``), so a long merge does not let the
  lease lapse. A holder that cannot renew stops working *before* its lease can expire.
- Fencing: ``LeaseFence`` re-checks the lease inside every merge transaction (PostgreSQL: ``FOR SHARE``, so
  a takeover waits for that merge to commit). A process that lost the lease cannot commit a merge.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from replicator.model import TableId
from replicator.obs import metrics
from replicator.ops.control import SqlSession
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.warehouses import STATE_SCHEMA

log = structlog.get_logger(__name__)

LEASES = TableId(STATE_SCHEMA, "leases")


class LeaseLost(RuntimeError):
    """This process no longer holds the lease: whatever it was doing must not commit."""


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    owner: str
    endpoint: str
    heartbeat_at: str
    expires_at: str
    live: bool  # not yet expired by the warehouse's clock


def clock_for(kind: str) -> str:
    """The warehouse's current time as the lease statements read it. PostgreSQL: ``clock_timestamp()``
    (``CURRENT_TIMESTAMP`` is the transaction's start: a renewal that waited behind a fenced merge would
    write an expiry already past). Redshift: ``SYSDATE`` (``CURRENT_TIMESTAMP`` is leader-node only there;
    its renewals take no row lock to wait behind). DuckDB: one process, ``CURRENT_TIMESTAMP``."""
    return {"postgres": "clock_timestamp()", "redshift": "SYSDATE"}.get(kind, "CURRENT_TIMESTAMP")


def create_tables(session: SqlSession, ddl: list[str]) -> None:
    """Run ``CREATE ... IF NOT EXISTS`` statements; again once if they fail: tasks starting together race in
    the catalog, and the loser finds the tables there on its second try."""
    try:
        session.transact(ddl)
    except Exception:
        session.transact(ddl)


def fence_clock_for(kind: str) -> str:
    """The clock a fence compares an expiry with, inside the merge transaction: its *start*. On PostgreSQL the
    fence holds the lease row ``FOR SHARE`` until the merge commits, so no takeover can commit meanwhile;
    comparing with the time of each check instead would fail a long round by its own hand (its renewal
    waits for the same lock)."""
    return "SYSDATE" if kind == "redshift" else "CURRENT_TIMESTAMP"


def lock_for(kind: str) -> str:
    """The row lock lease statements take before computing an expiry (PostgreSQL); none elsewhere
    (Redshift has no row locks and its fence takes none; DuckDB is one process)."""
    return " FOR UPDATE" if kind == "postgres" else ""


def seconds_between(expires: Any, now: Any) -> float:
    """``expires - now`` in seconds, from the warehouse's values (timestamps, or text from some drivers)."""
    if isinstance(expires, str):
        expires, now = datetime.fromisoformat(expires), datetime.fromisoformat(str(now))
    if getattr(expires, "tzinfo", None) is not None and getattr(now, "tzinfo", None) is None:
        now = now.replace(tzinfo=expires.tzinfo)
    elif getattr(now, "tzinfo", None) is not None and getattr(expires, "tzinfo", None) is None:
        expires = expires.replace(tzinfo=now.tzinfo)
    return float((expires - now).total_seconds())


def _ms(seconds: float) -> str:
    return f"INTERVAL '{int(seconds * 1000)} milliseconds'"


class LeaseStore:
    """Compare-and-set operations on one scope's lease row."""

    def __init__(
        self, session: SqlSession, *, scope: str, owner: str, ttl_seconds: float, endpoint: str = "",
        now: str = "CURRENT_TIMESTAMP", lock: str = "",
    ):  # fmt: skip
        """``now``: the warehouse's clock (``clock_for``); ``lock``: the row lock a renewal or takeover takes
        *before* it computes the new expiry (``lock_for``): PostgreSQL computes an UPDATE's new values before
        it waits for a row lock, so an UPDATE that waited behind a fenced merge (``FOR SHARE``) would write
        an expiry counted from before the wait, possibly already past."""
        self.now, self.lock = now, lock
        self.remaining: float | None = None  # seconds the lease is valid for, as of the last renewal
        self.session = session
        self.scope = scope
        self.owner = owner
        self.ttl = ttl_seconds
        self.endpoint = endpoint
        self._where = f"{quote_ident('scope')} = {quote_literal(scope)}"

    def ensure(self) -> None:
        ddl = [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}",
            f"CREATE TABLE IF NOT EXISTS {quote_table(LEASES)} ("
            '"scope" text NOT NULL PRIMARY KEY, "owner" text NOT NULL, "endpoint" text,'
            ' "acquired_at" timestamptz NOT NULL, "heartbeat_at" timestamptz NOT NULL,'
            ' "expires_at" timestamptz NOT NULL)',
        ]
        create_tables(self.session, ddl)

    def try_acquire(self, *, force_from: str | None = None) -> bool:
        """Take the lease if it is free, expired or already ours (or held by ``force_from``, an owner known
        to be dead); True when this process holds it now."""
        me = quote_literal(self.owner)
        dead = f" OR owner = {quote_literal(force_from)}" if force_from else ""
        t = quote_table(LEASES)
        insert = (
            f"INSERT INTO {t} (scope, owner, endpoint, acquired_at, heartbeat_at, expires_at)"
            f" SELECT {quote_literal(self.scope)}, {me}, {quote_literal(self.endpoint)}, {self.now},"
            f" {self.now}, {self.now} + {_ms(self.ttl)}"
            f" WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE {self._where})"
        )
        take = (
            f"UPDATE {t} SET acquired_at ="
            f" CASE WHEN owner = {me} THEN acquired_at ELSE {self.now} END,"
            f" owner = {me}, endpoint = {quote_literal(self.endpoint)}, heartbeat_at = {self.now},"
            f" expires_at = {self.now} + {_ms(self.ttl)}"
            f" WHERE {self._where} AND (owner = {me} OR expires_at < {self.now}{dead})"
        )
        lock = f"SELECT 1 FROM {t} WHERE {self._where}{self.lock}"
        try:
            rows = self.session.transact(
                [insert, lock, take], check=f"SELECT owner FROM {t} WHERE {self._where}"
            )
        except Exception as exc:
            # Two first-time takers racing on the INSERT: one gets a unique violation. Not ours this time.
            log.info("lease_attempt_failed", scope=self.scope, error=f"{type(exc).__name__}: {exc}")
            return False
        return bool(rows) and rows[0][0] == self.owner

    def renew(self) -> bool:
        """Extend the lease if this process still holds it (even if it just expired: nobody took it)."""
        me = quote_literal(self.owner)
        t = quote_table(LEASES)
        update = (
            f"UPDATE {t} SET heartbeat_at = {self.now},"
            f" expires_at = {self.now} + {_ms(self.ttl)}"
            f" WHERE {self._where} AND owner = {me}"
        )
        lock = f"SELECT 1 FROM {t} WHERE {self._where}{self.lock}"
        rows = self.session.transact(
            [lock, update], check=f"SELECT owner, expires_at, {self.now} FROM {t} WHERE {self._where}"
        )
        held = bool(rows) and rows[0][0] == self.owner
        self.remaining = seconds_between(rows[0][1], rows[0][2]) if held else None
        return held

    def release(self) -> None:
        """Let a waiting task take over at once (a clean stop); a no-op when not the holder."""
        t = quote_table(LEASES)
        self.session.transact(
            [
                f"UPDATE {t} SET expires_at = {self.now} - {_ms(1)}"
                f" WHERE {self._where} AND owner = {quote_literal(self.owner)}"
            ]
        )

    def holder(self) -> LeaseHolder | None:
        rows = self.session.query(
            f"SELECT owner, endpoint, heartbeat_at, expires_at, expires_at > {self.now}"
            f" FROM {quote_table(LEASES)} WHERE {self._where}"
        )
        if not rows:
            return None
        owner, endpoint, beat, expires, live = rows[0]
        return LeaseHolder(owner, endpoint or "", str(beat), str(expires), bool(live))


class LeaseKeeper:
    """Renews the lease every ``interval`` seconds on its own session; sets ``lost`` when it cannot.

    ``lost`` is set when another owner holds the row, or when renewals have failed for so long that the lease
    may expire within one more interval: the holder stops before anyone else can start.
    """

    def __init__(self, store: LeaseStore, *, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        # The deadline counts from *before* the renewal was sent: the warehouse's expiry is later than that.
        self._valid_until = time.monotonic() + store.ttl - interval
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        metrics.LEASE_HELD.labels(scope=self.store.scope).set(1)
        self._thread.start()

    def stop(self) -> None:
        """Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        metrics.LEASE_HELD.labels(scope=self.store.scope).set(0)

    def _run(self) -> None:
        bound = log.bind(scope=self.store.scope, owner=self.store.owner)
        while not self._stop.wait(self.interval):
            try:
                held = self.store.renew()
            except Exception as exc:
                metrics.ERRORS.labels(stage="lease", kind=type(exc).__name__).inc()
                bound.warning("lease_renew_failed", error=f"{type(exc).__name__}: {exc}")
                if time.monotonic() >= self._valid_until:
                    self._lose(bound, "renewals failed until the lease could expire")
                    return
                continue
            if not held:
                self._lose(bound, "another task holds the lease")
                return
            # From the expiry the warehouse wrote (after any wait for a merge's row lock), not from ``sent``.
            left = self.store.remaining if self.store.remaining is not None else self.store.ttl
            self._valid_until = time.monotonic() + min(left, self.store.ttl) - self.interval

    def _lose(self, bound: Any, why: str) -> None:
        metrics.LEASE_HELD.labels(scope=self.store.scope).set(0)
        bound.error("lease_lost", reason=why)
        self.lost.set()


class LeaseFence:
    """A merge hook: the merge commits only while this process holds a live lease (see module docstring)."""

    def __init__(self, store: LeaseStore, *, row_lock: str = "", now: str = "CURRENT_TIMESTAMP") -> None:
        """``now``: ``fence_clock_for`` the warehouse."""
        self.sql = (
            f"SELECT 1 FROM {quote_table(LEASES)} WHERE {quote_ident('scope')} = {quote_literal(store.scope)}"
            f" AND owner = {quote_literal(store.owner)} AND expires_at > {now}{row_lock}"
        )

    def before_merge(self, ctx: Any) -> None:
        if not ctx.query(self.sql):
            raise LeaseLost("this task no longer holds the lease; the merge was rolled back")

    def after_merge(self, ctx: Any) -> None:
        return None
