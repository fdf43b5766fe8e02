#!/usr/bin/env bash
# The mutation check: apply each guarantee-breaking patch of tests/mutants/catalog.py to a scratch copy of
# the repository, run the tests it names there, and fail (exit 1) if any mutant survives (a named test
# passes with the guarantee broken). The repository itself is never modified. Arguments go to the runner:
#   scripts/mutants.sh                       every mutant, two at a time
#   scripts/mutants.sh --list                the mutants and the tests that must catch each
#   scripts/mutants.sh ack_before_stage      one mutant
#   scripts/mutants.sh --head                mutate the last commit instead of the working tree
# Needs the test services: run it from scripts/test.sh, or after `eval "$(scripts/services.sh env)"`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
if [[ -z "${REPLICATOR_TEST_PG_DSN:-}" && -s "$SERVICES_POINTER" ]]; then
    eval "$(bash "$REPO_ROOT/scripts/services.sh" env)"
fi
exec "$VENV/bin/python" -m tests.mutants.run "$@"
