"""One fuzz case end to end, and the command line of ``scripts/fuzz.sh``.

``run_case``: fresh source and target databases, the workload's steps in order (transactions on the
source, the daemon started, SIGKILLed and crashed as they say), the daemon caught up and stopped, then
source and target compared. ``fuzz_case`` adds shrinking when the case fails.

    python -m tests.fuzz.run --seconds 600 [--seed S] [--target duckdb|postgres|redshift] [--keep SPEC]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests.fuzz.compare import compare
from tests.fuzz.execute import Counts, SourceWriter
from tests.fuzz.generator import Profile, generate
from tests.fuzz.ops import (
    BIG,
    AddColumn,
    AlterType,
    Crash,
    DropColumn,
    Kill,
    Start,
    Step,
    Txn,
    Wait,
    Workload,
    column_type,
)
from tests.fuzz.replica import ROOT, Incarnations, Replica, source_ddl
from tests.fuzz.shrink import apply_keep, parse_keep, shrink
from tests.fuzz.type_table import SETUP_SQL
from tests.helpers.pg import drop_slots, execute

TARGETS = ("duckdb", "postgres", "redshift")


@dataclass(frozen=True)
class Env:
    """Where a case runs: the admin DSN of the test server, the target kind, the replicator's code (a
    scratch copy to try an old version), how long catching up may take."""

    admin_dsn: str
    target: str = "duckdb"
    code: Path = ROOT
    catch_up_seconds: float = 90.0
    keep_files: bool = False
    keep_failed: bool = False  # keep the folder (config, daemon log, staging, DuckDB file) of a failed case
    # Column changes wait until the initial copy is complete: for checkouts older than 93358d9, where a copy
    # redone after a column change lost or refused that column (tests/fuzz/README.md).
    ddl_after_copy: bool = False
    # A column type changed at the source while the initial copy may still be (re)done: the copy takes the
    # wider values into the declared type and stops the table (tests/fuzz/README.md, "Divergences it found",
    # 5). By default ALTER ... TYPE waits until the copy is complete.
    alter_during_copy: bool = False


@dataclass
class Outcome:
    workload: Workload
    target: str
    problems: list[str]
    seconds: float
    counts: Counts = field(default_factory=Counts)
    runs: Incarnations = field(default_factory=Incarnations)
    log_tail: str = ""
    folder: str = ""  # kept for a look (Env.keep_failed)

    @property
    def failed(self) -> bool:
        return bool(self.problems)

    def categories(self) -> set[str]:
        """Kinds of failure, to keep shrinking on the same failure (not any other one met on the way)."""
        out = set()
        for p in self.problems:
            if "missing from the target, e.g." in p:
                out.add("missing")
            elif "in the target only" in p:
                out.add("extra")
            elif "not caught up" in p or "backlog" in p or "keeps failing" in p:
                out.add("stall")
            elif p.startswith("table stopped"):
                out.add("stopped")
            elif "exited on its own" in p:
                out.add("exit")
            elif "columns missing" in p or "no such table" in p:
                out.add("shape")
            elif " key (" in p:
                for col in re.findall(r"(?:^|; )(\w+): source", p.split(": ", 1)[1]):
                    out.add("differs:" + (col if col in (BIG, "n") else column_type(col).name))
            else:
                out.add("other")
        return out

    def summary(self) -> str:
        c, r, w = self.counts, self.runs, self.workload
        head = f"seed {w.seed} on {self.target}: {w.operations()} operations"
        txns = f"{c.statements} statements, {c.transactions} transactions"
        ends = f"{c.rolled_back} rolled back, {c.failed} failed; ~{c.rows} rows, largest ~{c.largest}"
        if c.narrowings:
            ends += f"; {c.narrowings} narrowings tried, {c.narrowings_refused} refused by a value"
        daemon = f"daemon started {r.started}x, killed {r.killed}x, crashed {r.crashed}x at a crash point"
        return f"{head} ({txns}: {ends}), {daemon}; {self.seconds:.1f} s"


def _db(admin: str, name: str) -> str:
    execute(admin, f'CREATE DATABASE "{name}"')
    return " ".join([*(p for p in admin.split() if not p.startswith("dbname=")), f"dbname={name}"])


def _drop(admin: str, dsn: str) -> None:
    name = dsn.rsplit("dbname=", 1)[-1]
    drop_slots(dsn)
    execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _step(step: Step, replica: Replica, writer: SourceWriter, env: Env) -> None:
    if replica.proc is not None:
        replica.poll()
    if isinstance(step, Txn):
        ddl = [s for s in step.stmts if isinstance(s, AddColumn | AlterType | DropColumn)]
        if (env.ddl_after_copy and ddl) or (
            not env.alter_during_copy and any(isinstance(s, AlterType) for s in ddl)
        ):
            replica.wait_copied()
        writer.run(step)
    elif isinstance(step, Start):
        if replica.proc is None:
            replica.start()
        replica.wait_slot()  # later steps stream; only earlier ones are the initial copy's
    elif isinstance(step, Kill):
        replica.wait_crash(5.0)
        if replica.proc is None:
            replica.start()
        replica.wait_active()
        time.sleep(step.after)
        replica.restart()
    elif isinstance(step, Crash):
        replica.wait_crash(5.0)
        replica.restart(step.point)
    elif isinstance(step, Wait):
        time.sleep(step.seconds)


def run_case(w: Workload, env: Env, *, batch_rows: int | None = None) -> Outcome:
    """Run ``w`` against fresh databases; the outcome lists every problem (empty: source = target)."""
    t0 = time.monotonic()
    tag = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix=f"fuzz-{w.seed}-"))
    if env.keep_files:
        print(f"case folder: {tmp}", flush=True)
    source = _db(env.admin_dsn, f"fz_s_{tag}")
    # The daemon confirms positions at a third of the walsender's timeout (10 s by default): a shorter one
    # on this database only lets a case see the slot caught up in ~2 s instead of ~10.
    execute(env.admin_dsn, f"ALTER DATABASE \"fz_s_{tag}\" SET wal_sender_timeout = '6s'")
    target_dsn = _db(env.admin_dsn, f"fz_t_{tag}") if env.target != "duckdb" else ""
    rows = batch_rows or _batch_rows(w.seed)
    replica: Replica | None = None
    writer: SourceWriter | None = None
    outcome = Outcome(w, env.target, [], 0.0)
    try:
        execute(source, *SETUP_SQL, *source_ddl(), *(s for t in w.tables for s in t.ddl()))
        replica = Replica(tmp, w.tables, target=env.target, source=source, target_dsn=target_dsn,
                          batch_rows=rows, code=env.code)  # fmt: skip
        writer = SourceWriter(source)
        outcome.counts = writer.counts
        for step in w.steps:
            _step(step, replica, writer, env)
        writer.close()
        writer = None
        outcome.problems += replica.catch_up(env.catch_up_seconds)
        address = str(tmp / "wh.duckdb") if env.target == "duckdb" else target_dsn
        outcome.problems += compare(source, env.target, address, w.tables)
    finally:
        if writer is not None:
            writer.close()
        if replica is not None:
            replica.kill()
            outcome.runs = replica.runs
            if outcome.problems:
                outcome.log_tail = replica.log_tail()
        _drop(env.admin_dsn, source)
        if target_dsn:
            _drop(env.admin_dsn, target_dsn)
        if env.keep_files or (env.keep_failed and outcome.problems):
            outcome.folder = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    outcome.seconds = time.monotonic() - t0
    return outcome


def fuzz_case(
    seed: int, env: Env, profile: Profile, *, shrink_seconds: float, keep: str = ""
) -> tuple[Outcome, str]:
    """Run the workload of ``seed`` (only the ``keep`` part, if given); when it fails, shrink it for at most
    ``shrink_seconds`` and return the outcome with a report of the seed and the shrunk operations."""
    w = generate(seed, profile)
    if keep:
        w = apply_keep(w, parse_keep(keep))
    outcome = run_case(w, replace(env, keep_failed=True))
    print(outcome.summary(), flush=True)
    if not outcome.failed:
        return outcome, ""
    lines = [f"FAILED: {outcome.summary()}", *(f"  {p}" for p in outcome.problems)]
    if outcome.counts.errors:
        lines.append(f"  statements that failed at the source: {outcome.counts.errors}")
    lines.append(
        f"daemon log (tail; the whole case is kept in {outcome.folder}):\n{outcome.log_tail[-2000:]}"
    )
    wanted = outcome.categories()
    tries = 0

    def still_fails(candidate: Workload) -> bool:
        nonlocal tries
        tries += 1
        again = run_case(candidate, env, batch_rows=_batch_rows(seed))
        seen = sorted(again.categories()) or "passes"
        print(f"  shrink try {tries}: {len(candidate.steps)} steps -> {seen}", flush=True)
        return bool(again.categories() & wanted)

    if shrink_seconds > 0:
        named = {m for p in outcome.problems for m in re.findall(r"^(t\d+)\b", p)}
        small, spec = shrink(w, still_fails, shrink_seconds, tables=named)
        # The workload depends on the profile's types: name them when they are not all of them.
        types = f" --types {','.join(profile.types)}" if profile.types != Profile().types else ""
        if keep:  # the spec indexes the full workload of the seed only when nothing was kept before
            spec = f"(of the workload kept by --keep {keep}) {spec}"
        lines += [
            f"shrunk in {tries} tries to {small.operations()} operations "
            f"(reproduce: scripts/fuzz.sh --seed {seed} --target {env.target}{types} --keep {spec}):",
            small.describe(),
        ]
    else:
        lines += ["not shrunk; the workload:", w.describe()]
    return outcome, "\n".join(lines)


def _batch_rows(seed: int) -> int:
    return random.Random(seed).choice([300, 2000, 20_000])


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(prog="scripts/fuzz.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60, help="run random seeds for this long")
    p.add_argument("--seed", type=int, help="run this seed only")
    p.add_argument("--target", choices=TARGETS, default=None, help="default: each seed picks one")
    p.add_argument("--keep", default="", help="run only this part of the seed's workload (a shrink result)")
    p.add_argument("--steps", type=int, default=Profile().steps, help="steps per workload")
    p.add_argument("--shrink-seconds", type=float, default=300)
    p.add_argument("--code", type=Path, default=ROOT, help="the replicator to test (a checkout's root)")
    p.add_argument("--ddl-after-copy", action="store_true", help="change columns only once the copy is out")
    p.add_argument(
        "--alter-during-copy", action="store_true", help="change column types while the copy may be redone"
    )
    p.add_argument("--keep-files", action="store_true", help="keep each case's folder (config, logs)")
    p.add_argument(
        "--types", default="", help="only these types (names in tests/fuzz/type_table.py, comma-separated)"
    )
    args = p.parse_args(argv)
    admin = os.environ.get("REPLICATOR_TEST_PG_DSN")
    if not admin:
        print("REPLICATOR_TEST_PG_DSN is not set: run through scripts/fuzz.sh", file=sys.stderr)
        return 2
    end = time.monotonic() + args.seconds
    rng = random.Random()
    failures, cases, operations = 0, 0, 0
    while True:
        seed = args.seed if args.seed is not None else rng.randrange(1, 10**9)
        target = args.target or random.Random(seed).choice(TARGETS)
        profile = Profile(steps=args.steps, target=target)
        if args.types:
            profile = replace(profile, types=tuple(args.types.split(",")))
        env = Env(
            admin,
            target=target,
            code=args.code,
            keep_files=args.keep_files,
            ddl_after_copy=args.ddl_after_copy,
            alter_during_copy=args.alter_during_copy,
        )
        outcome, report = fuzz_case(seed, env, profile, shrink_seconds=args.shrink_seconds, keep=args.keep)
        cases += 1
        operations += outcome.workload.operations()
        if report:
            failures += 1
            print(report, flush=True)
        if args.seed is not None or time.monotonic() >= end:
            break
    print(f"{cases} cases, {operations} operations, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
