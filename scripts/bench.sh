#!/usr/bin/env bash
# Run the benchmarks (tests/benchmarks, marked `benchmark`) with their output shown, against throwaway
# services like scripts/test.sh's. Extra arguments go to pytest:  scripts/bench.sh -k pgoutput
# REPLICATOR_TEST_REUSE_SERVICES=1 uses the services of `scripts/services.sh start` instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ensure_system_packages
ensure_venv dev
if [[ "${REPLICATOR_TEST_REUSE_SERVICES:-}" == 1 ]]; then
    use_running_services
else
    use_throwaway_services
fi

run_step "benchmarks" "$VENV/bin/pytest" tests/benchmarks -m benchmark -s "$@"
exit "$FIRST_FAILURE"
