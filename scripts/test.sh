#!/usr/bin/env bash
# Set up everything and run the checks: ruff, ruff format, mypy, then pytest against a throwaway PostgreSQL 15
# and moto S3 server, which are stopped and removed on exit. Extra arguments go to pytest:
#   scripts/test.sh -k merge -x
# REPLICATOR_TEST_REUSE_SERVICES=1 uses the services of `scripts/services.sh start` instead of fresh ones.
# Every step runs; the script exits with the first failing step's exit code (pytest's 5, "no tests
# collected", counts as a failure).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

# This script installs every tool the tests use (promtool, hadolint, cfn-lint, checkov), so a test that finds
# one missing must fail, not skip: CI=true tells tests/helpers/deploy.py so.
export CI="${CI:-true}"

t_start=$SECONDS
ensure_system_packages
ensure_venv dev
# The PostgreSQL source's compiled row scanner, built in place; its tests compare it with the pure-Python twin.
REPLICATOR_EXT_REQUIRED=1 bash scripts/build_ext.sh "$VENV/bin/python" || die "the compiled row scanner did not build"
ensure_checkov

run_lint

if [[ "${REPLICATOR_TEST_REUSE_SERVICES:-}" == 1 ]]; then
    use_running_services
else
    use_throwaway_services
fi

# Benchmarks are left to scripts/bench.sh; a -m given on the command line overrides this one.
# pytest-xdist workers (REPLICATOR_TEST_WORKERS, default 4 on this 2-core machine: most tests wait on
# PostgreSQL, child daemons and polls, not on the CPU); --dist loadgroup keeps each xdist_group on one worker
# (tests/conftest.py says which tests share one and why). REPLICATOR_TEST_WORKERS=0 runs in one process.
workers="${REPLICATOR_TEST_WORKERS:-4}"
xdist=(-n "$workers" --dist loadgroup)
((workers == 0)) && xdist=(-p no:xdist)
if (($# == 0)); then
    # Full run: the tests that time themselves (marked "timing" in tests/conftest.py) run alone afterwards.
    run_step "pytest" "$VENV/bin/pytest" "${xdist[@]}" --ignore=tests/benchmarks -m "not benchmark and not timing"
    run_step "pytest (timing tests, alone)" "$VENV/bin/pytest" -p no:xdist --ignore=tests/benchmarks \
        -m "timing and not benchmark"
else
    run_step "pytest" "$VENV/bin/pytest" "${xdist[@]}" --ignore=tests/benchmarks -m "not benchmark" "$@"
fi
# The mutation check (guarantee-breaking patches must make their named tests fail): on full runs only.
if (($# == 0)); then run_step "mutants" bash scripts/mutants.sh; fi

section "Summary"
if ((FIRST_FAILURE == 0)); then
    note "all checks passed in $((SECONDS - t_start)) s"
else
    note "FAILED: first failing step exited $FIRST_FAILURE (total $((SECONDS - t_start)) s)"
fi
exit "$FIRST_FAILURE"
