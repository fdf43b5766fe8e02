"""Scale-out (issue 18): tasks of one config share the tables under fenced claims.

The assignment is checked as a property over random unit and member sets; the claims against the real
PostgreSQL; and whole daemons (``replicator run`` processes) share a DMS feed of 12 tables on the real
PostgreSQL target while tasks are killed, drained and added."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from replicator.model import TableId
from replicator.ops.control import PostgresSession
from replicator.ops.lease import LeaseFence, LeaseLost, LeaseStore, clock_for, lock_for
from replicator.ops.shares import ShareStore, UnitFence, assign, desired_units, plan_units
from replicator.sources import shard_of, table_groups
from tests.helpers.daemon import DaemonProcess, free_port, http, wait_for
from tests.helpers.pg import fetch
from tests.helpers.scale import ManyTables, ledger_duplicates, owners, shared_config, target_state
from tests.helpers.support import run_cli

# -- the assignment -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_every_unit_gets_exactly_one_member_and_loads_differ_by_at_most_one(seed: int) -> None:
    rng = random.Random(seed)
    units = [f"u{i}" for i in range(rng.randint(0, 40))]
    members = [f"task-{rng.randrange(10**6)}" for _ in range(rng.randint(1, 7))]
    out = assign(units, members)
    assert set(out) == set(units)
    loads = [sum(1 for m in out.values() if m == member) for member in set(members)]
    assert max(loads) - min(loads) <= 1, loads
    # Every task computes the same answer, whatever order it reads the members in.
    assert assign(list(reversed(units)), sorted(members, reverse=True)) == out


@pytest.mark.parametrize("seed", range(20))
def test_a_task_joining_moves_few_units(seed: int) -> None:
    """Rendezvous hashing: a new member takes about its share, not a reshuffle of everything."""
    rng = random.Random(seed)
    units = [f"fleet.t{i:02}" for i in range(30)]
    members = [f"task-{i}" for i in range(rng.randint(1, 4))]
    before = assign(units, members)
    after = assign(units, [*members, "task-new"])
    moved = [u for u in units if before[u] != after[u]]
    share = len(units) // (len(members) + 1)
    assert share - 1 <= sum(1 for m in after.values() if m == "task-new") <= share + 1
    assert len(moved) <= 2 * (share + 1), (len(moved), share)


def test_tables_a_view_reads_together_are_one_unit_and_one_shard() -> None:
    tables = [TableId("s", n) for n in ("a", "b", "c", "d", "e")]
    groups = table_groups(tables, [frozenset({tables[0], tables[2]}), frozenset({tables[2], tables[3]})])
    assert groups[tables[0]] == groups[tables[2]] == groups[tables[3]] == "s.a"
    assert groups[tables[1]] == "s.b" and groups[tables[4]] == "s.e"
    units = plan_units("dms", tables, groups)
    assert sorted(sorted(str(t) for t in u.tables) for u in units) == [
        ["s.a", "s.c", "s.d"],
        ["s.b"],
        ["s.e"],
    ]
    assert len(plan_units("dms", tables, groups, one_feed=True)) == 1
    # Shards are a stable hash of the group: the same on every run, and one shard for a whole group.
    assert shard_of("s.a", 3) == shard_of("s.a", 3) and shard_of("anything", 1) == 0
    assert {shard_of(groups[t], 4) for t in (tables[0], tables[2], tables[3])} == {shard_of("s.a", 4)}


# -- claims on the real warehouse -----------------------------------------------------------------------


def _store(dsn: str, owner: str, scope: str, ttl: float = 2.0) -> ShareStore:
    return ShareStore(
        PostgresSession(dsn), scope=scope, owner=owner, ttl_seconds=ttl, endpoint="test:0",
        now=clock_for("postgres"), lock=lock_for("postgres"),
    )  # fmt: skip


def test_a_claim_is_taken_once_renewed_by_its_owner_and_taken_over_with_a_new_token(pg_dsn: str) -> None:
    a, b = _store(pg_dsn, "a", "s1"), _store(pg_dsn, "b", "s1")
    a.ensure()
    token = a.claim("u1")
    assert token is not None
    assert b.claim("u1") is None  # live and someone else's
    assert a.claim("u1") == token  # ours again: same token
    assert a.renew({"u1": token}) == set()
    time.sleep(2.3)  # expired, nobody renewed
    taken = b.claim("u1")
    assert taken == token + 1
    assert a.renew({"u1": token}) == {"u1"}  # a finds out
    b.release(["u1"])
    assert a.claim("u1") == token + 2  # released: free for anyone, with a new token


def test_members_come_and_go_and_the_desired_units_follow(pg_dsn: str) -> None:
    a, b = _store(pg_dsn, "a", "s2", ttl=30), _store(pg_dsn, "b", "s2", ttl=30)
    a.ensure()
    a.heartbeat()
    units = [f"u{i}" for i in range(6)]
    assert desired_units(units, a.members(), "a") == set(units)
    b.heartbeat()
    assert a.members() == ["a", "b"]
    mine, theirs = desired_units(units, a.members(), "a"), desired_units(units, b.members(), "b")
    assert len(mine) == len(theirs) == 3 and not mine & theirs
    b.leave()
    assert a.members() == ["a"]


class _Ctx:
    def __init__(self, dsn: str, table: TableId) -> None:
        self.dsn = dsn
        self.manifest = type("M", (), {"table": table})()

    def query(self, sql: str) -> list[tuple[object, ...]]:
        return fetch(self.dsn, sql)


def test_the_fence_refuses_a_merge_once_the_claim_moved_on(pg_dsn: str) -> None:
    a, b = _store(pg_dsn, "a", "s3", ttl=1.0), _store(pg_dsn, "b", "s3", ttl=1.0)
    a.ensure()
    table = TableId("fleet", "t00")
    token = a.claim("fleet.t00")
    assert token is not None
    fence = UnitFence(a, {table: "fleet.t00"}, {"fleet.t00": token})
    fence.before_merge(_Ctx(pg_dsn, table))  # ours: passes
    time.sleep(1.2)
    with pytest.raises(LeaseLost):  # expired, even before anyone took it
        fence.before_merge(_Ctx(pg_dsn, table))
    assert b.claim("fleet.t00") == token + 1
    assert a.claim("fleet.t00") is None
    with pytest.raises(LeaseLost):
        fence.before_merge(_Ctx(pg_dsn, table))
    with pytest.raises(LeaseLost):  # a table of no unit of ours
        fence.before_merge(_Ctx(pg_dsn, TableId("fleet", "t01")))


@pytest.mark.parametrize("kind", ["claims", "single lease"])
def test_a_renewal_that_waited_behind_a_long_fenced_merge_still_extends_the_lease(
    pg_dsn: str, kind: str
) -> None:
    """The fence holds the claim's row FOR SHARE for the whole merge; a renewal waits for it. Its expiry must
    count from when it was written, not from when its transaction began (then a merge longer than the lease
    made every next merge fail: LeaseLost, found by the fuzzer)."""
    table, ttl = TableId("fleet", "t00"), 1.5
    merge = psycopg2.connect(pg_dsn)
    try:
        if kind == "claims":
            store = _store(pg_dsn, "a", "s4", ttl=ttl)
            store.ensure()
            token = store.claim("fleet.t00")
            assert token is not None
            fence: Any = UnitFence(store, {table: "fleet.t00"}, {"fleet.t00": token}, row_lock=" FOR SHARE")
            renew: Callable[[], object] = lambda: store.renew({"fleet.t00": token})  # noqa: E731
        else:
            lease = LeaseStore(PostgresSession(pg_dsn), scope="s4", owner="a", ttl_seconds=ttl,
                               now=clock_for("postgres"), lock=lock_for("postgres"))  # fmt: skip
            lease.ensure()
            assert lease.try_acquire()
            fence = LeaseFence(lease, row_lock=" FOR SHARE")
            renew = lease.renew
        with merge.cursor() as cur:  # a merge transaction, fenced, that lasts longer than the lease
            ctx = _Ctx(pg_dsn, table)
            ctx.query = lambda sql: (cur.execute(sql), cur.fetchall())[1]  # type: ignore[method-assign]
            fence.before_merge(ctx)
            renewal = threading.Thread(target=renew)
            renewal.start()
            time.sleep(ttl + 1.0)
            # Later batches of the same round: the lease was ours when it began, and no takeover can commit
            # while the round holds the row (its own renewal waits for it too).
            fence.before_merge(ctx)
            merge.commit()
            renewal.join(timeout=10)
        fence.before_merge(_Ctx(pg_dsn, table))  # the renewal, written after the wait, holds
    finally:
        merge.close()


# -- daemons sharing one config -------------------------------------------------------------------------


def _converged(feed: ManyTables, dsn: str) -> bool:
    try:
        return target_state(dsn, feed.names) == feed.expected()
    except Exception:  # tables not created yet
        return False


def _describe(feed: ManyTables, dsn: str, daemons: list[DaemonProcess]) -> str:
    try:
        got = target_state(dsn, feed.names)
        diff = [n for n in feed.names if got[n] != feed.expected()[n]]
    except Exception as exc:
        diff = [repr(exc)]
    logs = "\n".join(d.log.read_text()[-1500:] for d in daemons)
    return f"tables differ: {diff}; owners: {owners(dsn, 'fleet')}\n{logs}"


@pytest.mark.timeout(300)
def test_three_tasks_share_twelve_tables_through_kills_drains_and_joins(tmp_path: Path, pg_dsn: str) -> None:
    feed = ManyTables(tmp_path / "dms", tables=12)
    feed.release(2)
    feed.write_schemas(tmp_path / "schemas")
    daemons: list[DaemonProcess] = []

    def start(name: str) -> DaemonProcess:
        port = free_port()
        cfg = shared_config(tmp_path / f"{name}.toml", source=tmp_path / "dms", target=pg_dsn, port=port,
                            scope="fleet")  # fmt: skip
        d = DaemonProcess(cfg, port, name=name)
        daemons.append(d)
        return d

    def live_owners() -> set[str]:
        return set(owners(pg_dsn, "fleet").values())

    def spread(n: int) -> bool:
        """Every one of the 12 units owned, by ``n`` tasks, loads differing by at most one."""
        o = owners(pg_dsn, "fleet")
        loads = [list(o.values()).count(m) for m in set(o.values())]
        return len(o) == 12 and len(loads) == n and max(loads) - min(loads) <= 1

    try:
        a, b, c = start("a"), start("b"), start("c")
        wait_for(lambda: spread(3), 60, lambda: f"not spread over 3: {owners(pg_dsn, 'fleet')}")
        wait_for(lambda: _converged(feed, pg_dsn), 90, lambda: _describe(feed, pg_dsn, daemons))

        feed.release(2)
        os.kill(a.proc.pid, signal.SIGKILL)  # dies mid-stream: its units expire after the lease (4 s)
        a.proc.wait(timeout=10)
        # Within the lease (4 s) plus a renewal and a term's start: 20 s even on a busy machine.
        killed = time.monotonic()
        wait_for(lambda: spread(2), 20, lambda: f"a's units not taken over: {owners(pg_dsn, 'fleet')}")
        print(f"a killed task's units owned again after {time.monotonic() - killed:.1f} s (lease 4 s)")
        wait_for(lambda: _converged(feed, pg_dsn), 90, lambda: _describe(feed, pg_dsn, daemons))

        feed.release(2)
        drained = time.monotonic()
        assert b.terminate() == 0  # drains: releases its units at once
        wait_for(lambda: spread(1), 10, lambda: f"b's units not taken over: {owners(pg_dsn, 'fleet')}")
        print(f"a drained task's units owned again {time.monotonic() - drained:.1f} s after SIGTERM")
        joined = time.monotonic()
        d = start("d")  # joins: takes half
        wait_for(lambda: spread(2), 30, lambda: f"d got no share: {owners(pg_dsn, 'fleet')}")
        print(f"a new task owned its share {time.monotonic() - joined:.1f} s after it started")
        feed.release(2)
        wait_for(lambda: _converged(feed, pg_dsn), 90, lambda: _describe(feed, pg_dsn, daemons))
        assert live_owners() == {_member(c), _member(d)}
        # The operator's view: status (read from the warehouse), the task's own /readyz, and its metrics.
        doc = json.loads(run_cli("status", "--json", "-c", str(tmp_path / "c.toml")).stdout)
        assert len(doc["ownership"]) == 12 and {u["owner"] for u in doc["ownership"]} == live_owners()
        text = run_cli("status", "-c", str(tmp_path / "c.toml")).stdout
        assert "12 units of work, 2 tasks:" in text and "UNOWNED" not in text, text
        ready = http("GET", f"{c.url}/readyz")[1]
        assert ready["mode"] == "shared" and len(ready["units"]) == 6, ready
        metrics = str(http("GET", f"{c.url}/metrics")[1])
        assert "replicator_units_owned 6.0" in metrics and "replicator_units_unowned 0.0" in metrics
        assert f'replicator_task_info{{scope="fleet",task="{_member(c)}"}} 1.0' in metrics
        assert ledger_duplicates(pg_dsn) == []
        # Each batch once: the ledger's rows add up to every change the feed released (loads included).
        rows = fetch(pg_dsn, "SELECT sum(rows) FROM _replicator.batches")[0][0]
        assert rows == 12 * 20 + 12 * 15 * feed.flushes
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.kill()


def _member(d: DaemonProcess) -> str:
    return d.events("units_claimed")[-1]["owner"] if d.events("units_claimed") else "?"


@pytest.mark.timeout(200)
def test_a_task_stopped_past_its_lease_cannot_commit_when_it_wakes(tmp_path: Path, pg_dsn: str) -> None:
    feed = ManyTables(tmp_path / "dms", tables=2)
    feed.release(1)
    feed.write_schemas(tmp_path / "schemas")
    port = free_port()
    cfg = shared_config(tmp_path / "a.toml", source=tmp_path / "dms", target=pg_dsn, port=port, scope="stall")
    a = DaemonProcess(cfg, port, name="a")
    b: DaemonProcess | None = None
    try:
        wait_for(lambda: _converged(feed, pg_dsn), 60, lambda: _describe(feed, pg_dsn, [a]))
        os.kill(a.proc.pid, signal.SIGSTOP)
        feed.release(1)
        port_b = free_port()
        cfg_b = shared_config(tmp_path / "b.toml", source=tmp_path / "dms", target=pg_dsn, port=port_b,
                              scope="stall")  # fmt: skip
        b = DaemonProcess(cfg_b, port_b, name="b")
        taken = lambda: set(owners(pg_dsn, "stall").values()) == {_member(b)}  # noqa: E731
        wait_for(taken, 40, "b did not take a's tables")
        wait_for(lambda: _converged(feed, pg_dsn), 60, lambda: _describe(feed, pg_dsn, [a, b]))
        os.kill(a.proc.pid, signal.SIGCONT)
        feed.release(1)
        wait_for(lambda: _converged(feed, pg_dsn), 60, lambda: _describe(feed, pg_dsn, [a, b]))
        time.sleep(3)  # a, awake, finds out from its keeper, a fence or its local deadline
        log = a.log.read_text()
        assert "claims_lost" in log or "LeaseLost" in log, log[-3000:]
        assert ledger_duplicates(pg_dsn) == []
        rows = fetch(pg_dsn, "SELECT sum(rows) FROM _replicator.batches")[0][0]
        assert rows == 2 * 20 + 2 * 15 * feed.flushes
        assert _converged(feed, pg_dsn)
    finally:
        for d in (a, b):
            if d is not None and d.proc.poll() is None:
                os.kill(d.proc.pid, signal.SIGCONT)
                d.kill()
