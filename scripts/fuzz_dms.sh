#!/usr/bin/env bash
# The DMS differential fuzzer: random DMS feeds (CSV with or without header, gzip, Parquet, full load + CDC,
# PreserveTransactions CDC_TXN files) with edge values and bad rows, replicated by the real daemon (SIGKILLed
# in some seeds) and compared with the independent reference reader. CI runs fixed seeds
# (tests/sources/dms/test_fuzz_dms.py); this runs new ones. A failure prints its seed and the shrunk feed operations,
# with the command that runs them again. Arguments go to `python -m tests.fuzz_dms` (see its --help):
#   scripts/fuzz_dms.sh                          new seeds for 300 s
#   scripts/fuzz_dms.sh --seconds 3600 --size 3  an hour of seeds three times as long
#   scripts/fuzz_dms.sh --seed 17                one seed
#   scripts/fuzz_dms.sh --seed 23 --keep 6.0,6.3 part of a seed, as printed after a shrink
# No services needed: the feed is a local folder, the target DuckDB.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
if (($# == 0)); then
    set -- --seconds 300
fi
exec "$VENV/bin/python" -m tests.fuzz_dms "$@"
