#!/usr/bin/env bash
# Run the differential fuzzer of the PostgreSQL source (tests/fuzz) on random seeds for a while, against
# throwaway services like scripts/test.sh's. Each seed's workload is replicated by `replicator run` under
# SIGKILLs and crash points, then every table is compared with the source; a failure prints its seed and a
# shrunk list of operations (and the command that runs just those again).
#   scripts/fuzz.sh --seconds 600                    random seeds, targets chosen by seed
#   scripts/fuzz.sh --seconds 600 --target postgres  one target
#   scripts/fuzz.sh --seed 42 [--keep SPEC]          one seed (a shrunk part of it with --keep)
# Other options: --steps N, --shrink-seconds N, --types a,b (only these, of tests/fuzz/type_table.py),
# --ddl-after-copy (columns change only once the initial copy is out), --code DIR (another checkout),
# --keep-files. REPLICATOR_TEST_REUSE_SERVICES=1 uses the services of `scripts/services.sh start`.
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

run_step "fuzz" "$VENV/bin/python" -m tests.fuzz.run "$@"
exit "$FIRST_FAILURE"
