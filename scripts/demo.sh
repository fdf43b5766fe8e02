#!/usr/bin/env bash
# Try replicator on a fresh machine: install it into .venv, then run `replicator demo`, which writes a sample
# AWS DMS feed into ./demo (of the repository), replicates it into DuckDB and prints a summary. Safe to run
# again. Extra arguments go to `replicator demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
caller="$PWD"
cd "$REPO_ROOT"

ensure_venv runtime
section "replicator demo $*"
# Run from where the user started: the demo's closing hint is a command line that works as printed there
# (relative paths from the repository root, absolute ones from anywhere else).
cd "$caller"
exec "$VENV/bin/replicator" demo --dir "$REPO_ROOT/demo" "$@"
