#!/usr/bin/env bash
# ruff check, ruff format --check and mypy (the lint part of scripts/test.sh). No services needed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ensure_venv dev
run_lint
exit "$FIRST_FAILURE"
