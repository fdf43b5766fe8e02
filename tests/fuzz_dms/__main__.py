"""The DMS differential fuzzer: ``python -m tests.fuzz_dms`` (``scripts/fuzz_dms.sh``).

    --seed S              run seed S (with --seconds: seeds S, S+1, ... until the time is up)
    --seconds N           keep running new seeds for N seconds
    --keep SPEC           run only these operations / rows of the seed (as printed after a shrink)
    --bad KINDS           bad-row kinds to write, comma-separated, or "all" (the default)
    --kills yes|no|seed   SIGKILL the daemon (crash points and timed kills) in every seed, none, or as drawn
    --size K              about K times more feed operations per seed
    --shrink-seconds M    time to shrink a failure (0: print it as found)

A failure prints its seed, the divergences, and the shrunk list of operations with the command that runs
it again; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tests.fuzz_dms.encode import layout_of
from tests.fuzz_dms.feed import BAD_KINDS, CdcFile, LoadFile, Row, Scenario, TxnFile, generate
from tests.fuzz_dms.run import Outcome, run_scenario
from tests.fuzz_dms.shrink import apply_keep, parse_keep, shrink


def attempt(sc: Scenario) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="replicator-fuzz-dms-") as tmp:
        return run_scenario(sc, Path(tmp))


def describe(sc: Scenario) -> str:
    lines = [f"seed {sc.seed}: layout {layout_of(sc.layout)}, batch max_rows {sc.batch_rows} (by run)"]
    for t in sc.tables:
        cols = ", ".join(f"{c.name!r} {c.kind}{' key' if c.key else ''}" for c in t.columns)
        lines.append(f"  table dbo.{t.name} ({cols})")
    for i, op in enumerate(sc.ops):
        if isinstance(op, (LoadFile, CdcFile)):
            lines.append(f"  [{i}] {type(op).__name__} {op.table}")
            lines.extend(f"        {_row(r)} ts={r.ts!r}" for r in op.rows)
        elif isinstance(op, TxnFile):
            lines.append(f"  [{i}] TxnFile")
            lines.extend(f"        {t} {_row(r)}" for t, r in op.rows)
        else:
            lines.append(f"  [{i}] {op!r}")
    return "\n".join(lines)


def _row(r: Row) -> str:
    return f"{r.op!r} {list(r.values)!r}" + (f" (last field written as {r.raw!r})" if r.raw else "")


def report(sc: Scenario, out: Outcome, *, shrink_seconds: float, argv_hint: str) -> None:
    print(f"\nFAILED seed {sc.seed}: {len(out.problems)} divergence(s)", flush=True)
    for p in out.problems:
        print(f"  - {p}")
    if shrink_seconds > 0:
        signature = out.signature
        tries = 0

        def fails(candidate: Scenario) -> bool:
            nonlocal tries
            tries += 1
            return attempt(candidate).signature == signature

        small, spec = shrink(sc, fails, shrink_seconds)
        again = attempt(small)
        print(f"\nshrunk in {tries} runs to {len(small.ops)} operations (keep spec {spec}):")
        print(describe(small))
        for p in again.problems:
            print(f"  - {p}")
        print(f"\nrun it again: scripts/fuzz_dms.sh --seed {sc.seed} --keep {spec}{argv_hint}")
    else:
        print(describe(sc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--keep")
    parser.add_argument("--bad", default="all")
    parser.add_argument("--kills", choices=["yes", "no", "seed"], default="seed")
    parser.add_argument("--size", type=int, default=1)
    parser.add_argument("--shrink-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    bad = frozenset(BAD_KINDS) if args.bad == "all" else frozenset(filter(None, args.bad.split(",")))
    if bad - set(BAD_KINDS):
        parser.error(f"unknown bad-row kinds {sorted(bad - set(BAD_KINDS))}; known: {BAD_KINDS}")
    kills = {"yes": True, "no": False, "seed": None}[args.kills]
    given = (("bad", args.bad), ("kills", args.kills), ("size", args.size))
    hint = "".join(f" --{k} {v}" for k, v in given if v != parser.get_default(k))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    deadline = time.monotonic() + args.seconds
    started, totals, n = time.monotonic(), Outcome(), 0
    while True:
        sc = generate(seed, kills=kills, bad=bad, size=args.size)
        if args.keep:
            sc = apply_keep(sc, parse_keep(args.keep))
        out = attempt(sc)
        n += 1
        totals = replace(
            totals, rows=totals.rows + out.rows, bad=totals.bad + out.bad, files=totals.files + out.files,
            runs=totals.runs + out.runs, kills=totals.kills + out.kills,
        )  # fmt: skip
        verdict = "FAILED" if out.problems else "ok"
        print(
            f"seed {seed}: {verdict} in {out.seconds:.1f} s ({len(sc.ops)} ops, {out.files} files,"
            f" {out.rows} rows, {out.bad} bad, {out.runs} runs, {out.kills} kills; {layout_of(sc.layout)})",
            flush=True,
        )
        if out.problems:
            report(sc, out, shrink_seconds=args.shrink_seconds, argv_hint=hint)
            return 1
        if time.monotonic() >= deadline or args.keep:
            break
        seed += 1
    took = time.monotonic() - started
    print(
        f"{n} scenarios passed in {took:.0f} s: {totals.files} files, {totals.rows} rows ({totals.bad} bad),"
        f" {totals.runs} daemon runs, {totals.kills} SIGKILLs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
