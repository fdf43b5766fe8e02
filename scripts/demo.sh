#!/usr/bin/env bash
# Try replicator on a fresh machine: install it into .venv, then run `replicator demo`, which writes a sample
# AWS DMS feed into ./demo, replicates it into DuckDB and prints a summary. Safe to run again.
# Extra arguments go to `replicator demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ensure_venv runtime
section "replicator demo $*"
exec "$VENV/bin/replicator" demo "$@"
