"""The long-running daemon: lease, per-table control, health, reconnects, around the pipeline's rounds.

One *term* is: open the warehouse, take the lease (waiting, not ready, while another task holds it), build
the pipeline, then run rounds until stopped, until the lease is lost, or until a failure. A failed term is
retried with exponential backoff and jitter: a restarted warehouse, a dropped connection or an S3 outage
needs no operator. Everything durable is transactional or idempotent, so starting a term over is safe: it
is the same as a restart of the process.

Each round: read the per-table control state (pause, resume, resync requests), capture and stage what the
source has (for every table, paused or not), merge the tables that are not paused, finish resyncs whose
reload is merged. The admin API (``replicator.ops.http``) calls ``act``/``tables``/``readiness`` from its
own threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from replicator import __version__
from replicator import app as app_mod
from replicator.config import Config, ConfigError
from replicator.model import TableId
from replicator.obs import metrics
from replicator.ops import actions, shares, stops
from replicator.ops import status as status_mod
from replicator.ops.actions import endpoint_file
from replicator.ops.control import (
    ACTIVE,
    LOADING,
    PAUSED,
    REQUESTED,
    RESYNCING,
    ControlStore,
    DuckDBSession,
    PostgresSession,
    SqlSession,
    TableControl,
    default_control,
)
from replicator.ops.http import NotActive, ObsServer
from replicator.ops.httpserver import Limits
from replicator.ops.lease import (
    LeaseFence,
    LeaseKeeper,
    LeaseLost,
    LeaseStore,
    clock_for,
    fence_clock_for,
    lock_for,
)
from replicator.pipeline import RunStats
from replicator.sources import Resyncable
from replicator.warehouses import SqlWarehouse, Warehouse

log = structlog.get_logger(__name__)

SYSTEM = "replicator"  # ``changed_by`` of state changes the daemon makes itself


class LoopSignal(threading.Event):
    """The pipeline's stop signal: set by itself, or by any parent (SIGTERM, lease lost).

    The pipeline checks it between batches and every 1024 changes, so each check is also a sign of life:
    ``last_check`` feeds the "making progress" part of ``/readyz``.
    """

    def __init__(self, *parents: threading.Event) -> None:
        super().__init__()
        self.parents = parents
        self.last_check = time.monotonic()

    def is_set(self) -> bool:
        self.last_check = time.monotonic()
        return super().is_set() or any(p.is_set() for p in self.parents)


class Backoff:
    """Exponential backoff with full jitter: 0.5 s, 1 s, 2 s ... capped, each a random part of that."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class _Term:
    app: app_mod.App
    control: ControlStore  # the main loop's session
    admin: ControlStore  # the admin API's session
    lost: threading.Event  # the lease (or a claim) was lost: stop at once
    loading: set[TableId] = field(default_factory=set)  # resyncs whose reload is being merged
    rebalance: threading.Event | None = None  # scale-out: the units to own changed; end the term
    shares: shares.ShareStore | None = None  # scale-out: this task's member and claims rows


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Daemon:
    def __init__(self, cfg: Config, stop: threading.Event) -> None:
        self.cfg = cfg
        self.stop = stop
        self.owner = owner_id()
        self.phase = "starting"
        self.connected = False
        self.holding = False
        self.units_held: list[str] = []  # scale-out: the units this task owns now
        self.last_round = time.monotonic()
        self.signal: LoopSignal | None = None
        self.stats = RunStats()
        self.errors: dict[TableId, str] = {}
        # Every stopped table (its source's stop, else its failing merge), as of the end of the last round:
        # what the admin API shows, the replicator_table_stopped gauge and ``run --once``'s exit code say.
        self.stopped: dict[TableId, stops.Stop] = {}
        self._source_stops: dict[TableId, stops.Stop] = {}
        self._stop_labels: set[tuple[str, str]] = set()
        self.http_port: int | None = None
        self.admin_url = ""
        self._active: _Term | None = None
        self._control_lock = threading.Lock()  # control writes vs. the loop's read-and-apply

    # -- the loop --------------------------------------------------------------------------------------

    def run(self, *, once: bool) -> int:
        """Until ``stop`` (or, with ``once``, until a round finds nothing new). Exit code: 0, or 1 with
        ``once`` when a table could not be merged (``errors``)."""
        metrics.BUILD.info({"version": __version__})
        metrics.TASK_INFO.info({"task": self.owner, "scope": self.cfg.lease.scope})
        server = None if once else self._start_server()
        backoff = Backoff()
        try:
            while not self.stop.is_set():
                try:
                    code = self._term(once=once)
                    backoff.reset()
                    if once:
                        return code
                except ConfigError:
                    raise  # fatal in every mode (exit 2): retrying cannot fix the configuration
                except Exception as exc:
                    if once:
                        raise
                    self.connected, self.holding, self.phase = False, False, "reconnecting"
                    delay = backoff.next()
                    metrics.ERRORS.labels(stage="daemon", kind=type(exc).__name__).inc()
                    log.error("term_failed", error=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 2))
                    self.stop.wait(delay)
            return 0
        finally:
            self.phase = "stopped"
            if server is not None:
                server.stop()

    def _start_server(self) -> ObsServer | None:
        http = self.cfg.http
        if http.port == 0:
            return None
        try:
            limits = Limits(http.max_connections, http.request_timeout_seconds)
            admin = (http.admin_host, http.admin_port) if http.admin_port else None
            server = ObsServer(
                http.host, http.port, self, admin_token=http.admin_token, limits=limits, admin=admin
            )
        except OSError as exc:
            # Keep replicating: a port clash must not stop the data. ECS health checks will say so.
            metrics.ERRORS.labels(stage="http", kind=type(exc).__name__).inc()
            log.error("http_unavailable", host=http.host, port=http.port, error=str(exc))
            return None
        server.start()
        self.http_port = server.port
        self.admin_url = server.admin_url
        return server

    def _session(self, warehouse: Warehouse) -> SqlSession:
        cursor = getattr(warehouse, "cursor", None)
        if self.cfg.warehouse.kind == "duckdb" and cursor is not None:
            return DuckDBSession(cursor())
        return PostgresSession(app_mod.postgres_dsn(self.cfg))

    def _term(self, *, once: bool) -> int:
        if shares.shared(self.cfg):
            return self._shared_term(once=once)
        warehouse = app_mod.open_warehouse(self.cfg)  # DuckDB: fails while another process has the file
        sessions: list[SqlSession] = []
        keeper: LeaseKeeper | None = None
        lease: LeaseStore | None = None
        built = False
        try:
            sessions = [self._session(warehouse) for _ in range(3)]
            lease = LeaseStore(
                sessions[0],
                scope=self.cfg.lease.scope,
                owner=self.owner,
                ttl_seconds=self.cfg.lease.ttl_seconds,
                endpoint=f"{socket.gethostname()}:{self.http_port or 0}",
                now=clock_for(self.cfg.warehouse.kind),
                lock=lock_for(self.cfg.warehouse.kind),
            )
            lease.ensure()
            control, admin = ControlStore(sessions[1]), ControlStore(sessions[2])
            control.ensure()
            self.connected = True
            if not self._wait_for_lease(lease, once=once):
                return 0
            keeper = LeaseKeeper(lease, interval=self.cfg.lease.renew_interval_seconds)
            keeper.start()
            self.holding = True
            if isinstance(warehouse, SqlWarehouse):
                row_lock = " FOR SHARE" if self.cfg.warehouse.kind == "postgres" else ""
                fence = LeaseFence(lease, row_lock=row_lock, now=fence_clock_for(self.cfg.warehouse.kind))
                warehouse.add_hook(fence)
            built = True
            with app_mod.build(self.cfg, warehouse=warehouse) as app:
                term = _Term(app, control, admin, keeper.lost)
                self._active = term
                self._write_endpoint()
                try:
                    return self._rounds(term, once=once)
                finally:
                    self._active = None
                    self._remove_endpoint()
                    self._end_lease(keeper, lease)
        finally:
            self.holding = False
            self._end_lease(keeper, lease)
            for s in sessions:
                s.close()
            if not built:
                warehouse.close()

    # -- scale-out (lease.mode = shared; see replicator/ops/shares.py) ---------------------------------------

    def _shared_term(self, *, once: bool) -> int:
        """A term over the units this task owns: claim them (waiting while their previous owners finish),
        build the pipeline over their tables, run rounds until stopped, a claim is lost, or the units to own
        change (a task joined, died or drained); then release what is no longer ours."""
        warehouse = app_mod.open_warehouse(self.cfg)
        sessions: list[SqlSession] = []
        keeper: shares.ShareKeeper | None = None
        store: shares.ShareStore | None = None
        built = False
        endpoint = f"{socket.gethostname()}:{self.http_port or 0}"
        clock = clock_for(self.cfg.warehouse.kind)
        try:
            sessions = [self._session(warehouse) for _ in range(4)]
            store = shares.ShareStore(
                sessions[0], scope=self.cfg.lease.scope, owner=self.owner,
                ttl_seconds=self.cfg.lease.ttl_seconds, endpoint=endpoint, now=clock,
                lock=lock_for(self.cfg.warehouse.kind),
            )  # fmt: skip
            store.ensure()
            control, admin = ControlStore(sessions[1]), ControlStore(sessions[2])
            control.ensure()
            self.connected = True
            units = shares.config_units(self.cfg)
            names = [u.name for u in units]
            held = self._claim_units(store, names, once=once)
            if held is None:
                return 0
            renewer = shares.ShareStore(
                sessions[3], scope=self.cfg.lease.scope, owner=self.owner,
                ttl_seconds=self.cfg.lease.ttl_seconds, endpoint=endpoint, now=clock,
                lock=lock_for(self.cfg.warehouse.kind),
            )  # fmt: skip
            keeper = shares.ShareKeeper(
                renewer, names, held, interval=self.cfg.lease.renew_interval_seconds, gone=self._gone
            )
            keeper.start()
            self.holding, self.units_held = True, sorted(held)
            owned = {t: u.name for u in units if u.name in held for t in u.tables}
            if self.cfg.source.kind == "postgres":
                slots = [
                    app_mod.shard_config(self.cfg, int(u.removeprefix("shard-"))).source.postgres.slot_name
                    for u in held
                ]
                shares.take_over_slots(app_mod.postgres_source_dsn(self.cfg), slots)
            if isinstance(warehouse, SqlWarehouse):
                row_lock = " FOR SHARE" if self.cfg.warehouse.kind == "postgres" else ""
                fence_now = fence_clock_for(self.cfg.warehouse.kind)
                warehouse.add_hook(shares.UnitFence(store, owned, held, row_lock=row_lock, now=fence_now))
            built = True
            log.info("units_claimed", owner=self.owner, units=sorted(held), tables=len(owned))
            with app_mod.build(self.cfg, warehouse=warehouse, tables=set(owned)) as app:
                app.pipeline.guard = keeper.check
                # ``--once`` owns every unit until it is done: nothing to rebalance.
                rebalance = None if once else keeper.rebalance
                term = _Term(app, control, admin, keeper.lost, rebalance=rebalance, shares=store)
                self._active = term
                try:
                    return self._rounds(term, once=once)
                finally:
                    self._active = None
        finally:
            self.holding, self.units_held = False, []
            metrics.UNITS_OWNED.set(0)
            if keeper is not None:
                keeper.stop()
            if store is not None:
                with contextlib.suppress(Exception):
                    if self.stop.is_set() or once:
                        store.leave()  # drain: the others take our units at once
                    elif keeper is not None:
                        members = store.members()
                        keep = shares.desired_units([u for u in keeper.units], members, self.owner)
                        store.release(set(keeper.held) - keep)
            for s in sessions:
                s.close()
            if not built:
                warehouse.close()

    def _claim_units(
        self, store: shares.ShareStore, units: list[str], *, once: bool
    ) -> dict[str, int] | None:
        """Claim the units this task should own: unit -> fencing token; None when stopped while waiting.
        Waits while none is free (their owners release them within a round) or while this task should own
        none (more tasks than units: a standby); starts with part of them after two renew intervals."""
        interval = self.cfg.lease.renew_interval_seconds
        waited, logged = 0.0, False
        while True:
            store.heartbeat()
            claims = store.claims()
            # Owners provably gone (a crashed run of this host) need not be waited for until they expire.
            dead = {
                c.owner for c in claims.values() if c.live and c.owner != self.owner and self._gone(c.owner)
            }
            members = [m for m in store.members() if m not in dead and (m == self.owner or not self._gone(m))]
            desired = set(units) if once else shares.desired_units(units, members, self.owner)
            held = {u: tok for u in sorted(desired) if (tok := store.claim(u, dead=dead)) is not None}
            claims = store.claims()
            shares.observe(claims, units)
            stale = {u for u, c in claims.items() if c.owner == self.owner and c.live and u not in desired}
            store.release(stale)  # left from an earlier term, before the others joined
            if once and len(held) < len(desired):
                store.release(set(held))
                busy = sorted(u for u in desired if u not in held)
                raise RuntimeError(
                    f"units {', '.join(busy)} are owned by other running tasks of scope"
                    f" {self.cfg.lease.scope!r}; stop them or run with another lease.scope"
                )
            if held and (len(held) == len(desired) or waited >= 2 * interval):
                return held
            store.release(set(held))
            self.phase = "waiting_for_units" if desired else "standby"
            if not logged:
                log.info("units_waiting", desired=sorted(desired), free=sorted(held))
                logged = True
            if self.stop.wait(interval):
                return None
            waited += interval

    def _end_lease(self, keeper: LeaseKeeper | None, lease: LeaseStore | None) -> None:
        """Stop renewing and hand the lease over (a waiting task takes it at once). Safe to call twice."""
        if keeper is not None:
            keeper.stop()
        if lease is not None and keeper is not None:
            # Only clears a row this process still owns; fails harmlessly on a closed connection.
            with contextlib.suppress(Exception):
                lease.release()

    def _wait_for_lease(self, lease: LeaseStore, *, once: bool) -> bool:
        waiting_logged = False
        while True:
            holder = lease.holder()
            force = None
            if holder is not None and holder.owner != self.owner and holder.live and self._gone(holder.owner):
                force = holder.owner
            if lease.try_acquire(force_from=force):
                log.info("lease_acquired", scope=lease.scope, owner=self.owner, took_from=force)
                return True
            if once:
                raise RuntimeError(
                    f"another task ({holder.owner if holder else '?'}) holds the lease of scope"
                    f" {lease.scope!r}; stop it or run with another lease.scope"
                )
            self.phase = "waiting_for_lease"
            if not waiting_logged:
                log.info("lease_waiting", scope=lease.scope, holder=holder.owner if holder else None)
                waiting_logged = True
            if self.stop.wait(self.cfg.lease.renew_interval_seconds):
                return False

    def _gone(self, owner: str) -> bool:
        """The holder is provably dead: the DuckDB file lock is ours (one process per file), or it ran on
        this host and its process no longer exists (a restart after a crash need not wait for expiry)."""
        if self.cfg.warehouse.kind == "duckdb":
            return True
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _rounds(self, term: _Term, *, once: bool) -> int:
        pipeline = term.app.pipeline
        signal = LoopSignal(self.stop, term.lost, *([term.rebalance] if term.rebalance else []))
        self.signal = signal
        pipeline.start()
        if once:
            pipeline.mark_drain_point()
        self.phase = "active"
        log.info("daemon_active", owner=self.owner, scope=self.cfg.lease.scope)
        while not signal.is_set():
            self._sync_control(term)
            captured = pipeline.capture(signal)
            if signal.is_set():
                break
            pipeline.merge_round(signal, everything=once)
            pipeline.refresh_views(flush=once and captured == 0)  # issue 6: views after the merges
            self._after_round(term)
            self.last_round = time.monotonic()
            metrics.ROUNDS.inc()
            if once and captured == 0 and pipeline.source_drained():
                break
            if not once:
                pipeline.wait_between_rounds(captured, self.stop)
        self.stats, self.errors = pipeline.stats, dict(pipeline.errors)
        self._refresh_stops(term)
        if term.lost.is_set() and not self.stop.is_set():
            raise LeaseLost("the lease was lost; waiting to take it again")
        return 1 if once and self.stopped else 0

    def _after_round(self, term: _Term) -> None:
        pipeline = term.app.pipeline
        self.errors = dict(pipeline.errors)
        if any(e.startswith(LeaseLost.__name__) for e in pipeline.errors.values()):
            raise LeaseLost("a merge found its lease or claim held by another task")
        if pipeline.errors:
            # Merge errors may be a lost connection: probe it, and start the term over if it is gone.
            term.app.warehouse.table_states()
        self._refresh_stops(term)
        for table in sorted(term.loading):
            # A reload that stopped where the table stopped before has not got past it: still resyncing.
            if table in self.stopped or any(True for _ in pipeline.stager.pending(table)):
                continue
            with self._control_lock:
                current = term.control.get(table)
                if current.state == RESYNCING and current.resync_phase == LOADING:
                    term.control.set(table, "active", reason="resync finished", who=SYSTEM)
                    log.info("resync_finished", table=str(table))
            term.loading.discard(table)

    def _refresh_stops(self, term: _Term) -> None:
        """Which tables are stopped now (loop thread): for the admin API, the gauge and ``run --once``."""
        self._source_stops = stops.live(term.app.source, self.cfg.source.kind, term.app.pipeline.schemas)
        self.stopped = status_mod.all_stops(self._source_stops, dict(term.app.pipeline.errors))
        labels = {(str(t), s.reason) for t, s in self.stopped.items()}
        for table, reason in self._stop_labels - labels:
            metrics.TABLE_STOPPED.remove(table, reason)
        for table, reason in labels:
            metrics.TABLE_STOPPED.labels(table=table, reason=reason).set(1)
        self._stop_labels = labels

    # -- control ---------------------------------------------------------------------------------------

    def _sync_control(self, term: _Term) -> None:
        pipeline = term.app.pipeline
        with self._control_lock:
            states = term.control.read_all()
            held = {t for t in pipeline.schemas if not states.get(t, default_control(t)).merges}
            with pipeline.merge_gate:
                pipeline.paused.clear()
                pipeline.paused.update(held)
        metrics.PAUSED_TABLES.set(len(held))
        for t in pipeline.schemas:
            state = states.get(t, default_control(t)).state
            for s in ("active", "paused", "resyncing"):
                metrics.TABLE_STATE.labels(table=str(t), state=s).set(1 if s == state else 0)
        for t, c in sorted(states.items()):
            if t in pipeline.schemas and c.decision is not None:
                self._decide(term, t, c)
            if t not in pipeline.schemas or c.state != RESYNCING:
                continue
            if c.resync_phase == REQUESTED:
                self._resync(term, t)
            elif c.resync_phase == LOADING:
                term.loading.add(t)

    def _decide(self, term: _Term, table: TableId, control: TableControl) -> None:
        """Hand the operator's ``retry`` or ``skip`` to the source, then clear it from the control row."""
        resume = getattr(term.app.source, "resume", None)
        stop = stops.live(term.app.source, self.cfg.source.kind, [table]).get(table)
        stopped = stop is not None
        if resume is not None and stop is not None:
            resume(None if stop.shared else table, control.decision)  # None: the shared feed
        with self._control_lock:
            term.control.set(table, ACTIVE, reason=control.reason, who=control.changed_by)
        log.info(
            "table_decision_applied", table=str(table), action=control.decision, who=control.changed_by,
            reason=control.reason, was_stopped=stopped,
        )  # fmt: skip
        self._refresh_stops(term)

    def _resync(self, term: _Term, table: TableId) -> None:
        """Start ``table`` over. Order matters for crashes: until the warehouse transaction commits, the
        request stays ``requested`` and a restart redoes every step (each is idempotent)."""
        source, pipeline = term.app.source, term.app.pipeline
        bound = log.bind(table=str(table))
        if not isinstance(source, Resyncable):
            why = f"resync is not supported by the {self.cfg.source.kind} source; resume to go on"
            with self._control_lock:
                term.control.set(table, PAUSED, reason=why, who=SYSTEM)
            bound.error("resync_unsupported", source=self.cfg.source.kind)
            return
        refusal = getattr(source, "resync_refusal", None)
        refused: str | None = refusal(table) if refusal is not None else None
        if refused is not None:  # before anything is dropped: staged batches and the target stay as they are
            with self._control_lock:
                term.control.set(table, ACTIVE, reason=f"resync refused: {refused}", who=SYSTEM)
            bound.error("resync_refused", reason=refused)
            self._refresh_stops(term)
            return
        dropped = pipeline.forget(table)
        before = self.stopped.get(table)
        source.resync(table)
        reason = "full reload in progress"
        if before is not None:
            # Shown until the reload gets past where the table stopped (``_after_round``).
            reason += f"; it was stopped: {before.reason} at {before.where()}"
        with self._control_lock:
            term.control.reset_target(table, who=SYSTEM, reason=reason)
            with pipeline.merge_gate:
                pipeline.paused.discard(table)
        term.loading.add(table)
        bound.info("resync_started", dropped_batches=dropped)

    # -- the admin API's backend (request threads) -----------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons: list[str] = []
        if self.phase != "active":
            reasons.append(self.phase)
        if not self.connected:
            reasons.append("not connected to the warehouse")
        if not self.holding:
            reasons.append("owns no tables" if self.phase == "standby" else "not holding the lease")
        progress = max(self.last_round, self.signal.last_check if self.signal else 0.0)
        idle = time.monotonic() - progress
        if self.phase == "active" and idle > self.cfg.http.ready_stall_seconds:
            reasons.append(f"no progress for {idle:.0f} s")
        # A stopped table does not make the task unready: a restart cannot fix a bad file, and the other
        # tables go on. It is listed here, and the replicator_table_stopped gauge raises the alert.
        detail = {
            "phase": self.phase, "owner": self.owner, "lease_scope": self.cfg.lease.scope,
            "seconds_since_progress": round(idle, 1), "reasons": reasons,
            "stopped_tables": sorted(str(t) for t in self.stopped),
            "mode": "shared" if shares.shared(self.cfg) else "single", "units": list(self.units_held),
        }  # fmt: skip
        return not reasons, detail

    def _term_or_fail(self) -> _Term:
        term = self._active
        if term is None:
            raise NotActive(f"this task is {self.phase} (not holding the lease); ask the active task")
        return term

    def tables(self) -> list[dict[str, Any]]:
        term = self._term_or_fail()
        pipeline = term.app.pipeline
        with self._control_lock:
            states = term.admin.read_all()
        return actions.table_rows(
            sorted(pipeline.schemas), states, pipeline.stager, self._source_stops, dict(pipeline.errors)
        )

    def status(self) -> dict[str, Any]:
        """``replicator status --json``'s document, read through the admin session (the loop merges on)."""
        term = self._term_or_fail()
        pipeline, warehouse = term.app.pipeline, term.app.warehouse
        errors = dict(pipeline.errors)
        with self._control_lock:
            query = term.admin.session.query
            controls = term.admin.read_all()
            dialect = getattr(warehouse, "dialect", None)
            reader: status_mod.Progress = (
                status_mod.SessionReader(query, dialect) if dialect is not None else warehouse
            )
            rows = status_mod.collect(
                sorted(pipeline.schemas), pipeline.stager, reader, stops=self._source_stops, errors=errors,
                controls=controls,
            )  # fmt: skip
            views = status_mod.collect_views(query if dialect is not None else None)
        table_rows = actions.table_rows(
            sorted(pipeline.schemas), controls, pipeline.stager, self._source_stops, errors
        )
        doc = status_mod.document(rows, table_rows, views)
        if term.shares is not None:
            doc["ownership"] = self._ownership(term.shares)
        return doc

    def _ownership(self, store: shares.ShareStore) -> list[dict[str, Any]]:
        """Scale-out: every unit of the config with its tables and its owner now (``status``, console)."""
        with self._control_lock:
            rows = shares.ownership(store, shares.config_units(self.cfg))
        return [{**r, "this_task": r["owner"] == self.owner} for r in rows]

    def quarantined(self) -> list[dict[str, Any]]:
        """The quarantine's notes (one per file, row or group of rows set aside), for the console."""
        return [dict(n) for n in self._term_or_fail().app.quarantine.items()]

    def act(self, action: str, table: TableId, *, reason: str, who: str) -> dict[str, Any]:
        term = self._term_or_fail()
        pipeline = term.app.pipeline
        if table not in pipeline.schemas:
            raise KeyError(str(table))
        with self._control_lock:
            new, note = actions.decide(
                term.admin, action, table, reason=reason, who=who, stop=self.stopped.get(table)
            )
            # Waits for a merge of this table in flight: once this returns, no further batch commits.
            with pipeline.merge_gate:
                if new.merges:
                    pipeline.paused.discard(table)
                else:
                    pipeline.paused.add(table)
            states = term.admin.read_all()
        row = actions.table_rows([table], states, pipeline.stager, self._source_stops, dict(pipeline.errors))[
            0
        ]
        if new.decision is not None:
            note = (note + "; " if note else "") + f"the {new.decision} is applied at the daemon's next round"
        if note:
            row["note"] = note
        return row

    # -- where the CLI finds us ------------------------------------------------------------------------

    def _write_endpoint(self) -> None:
        path = endpoint_file(self.cfg)
        if path is None or self.http_port is None:
            return
        doc = {"pid": os.getpid(), "owner": self.owner, "url": self.admin_url}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    def _remove_endpoint(self) -> None:
        path = endpoint_file(self.cfg)
        if path is None:
            return
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            if json.loads(path.read_text())["owner"] == self.owner:
                path.unlink()
