#!/usr/bin/env bash
# Keep a PostgreSQL 15 and a moto S3 server running across test runs (for development):
#   scripts/services.sh start         start them (or report the running ones) and print their env
#   eval "$(scripts/services.sh env)"  then e.g.  .venv/bin/pytest -k merge
#   scripts/services.sh stop          stop them and remove their data
# `REPLICATOR_TEST_REUSE_SERVICES=1 scripts/test.sh` runs the full checks against them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

running_dir() {
    local dir
    dir="$(cat "$SERVICES_POINTER" 2>/dev/null || true)"
    [[ -n "$dir" && -d "$dir" ]] && echo "$dir"
}

case "${1:-}" in
start)
    if dir="$(running_dir)" && svc_alive "$dir"; then
        section "Services already running ($dir)" >&2
    else
        [[ -n "${dir:-}" ]] && svc_stop "$dir"
        ensure_system_packages >&2
        ensure_venv dev >&2
        dir="$(svc_new_dir)"
        trap 'svc_stop "$dir"' EXIT # a failed start leaves nothing behind
        svc_start "$dir" >&2
        trap - EXIT
        mkdir -p "$(dirname "$SERVICES_POINTER")"
        echo "$dir" >"$SERVICES_POINTER"
    fi
    cat "$dir/env"
    ;;
stop)
    if dir="$(running_dir)"; then
        svc_stop "$dir"
        echo "stopped ($dir)" >&2
    else
        echo "no services running" >&2
    fi
    rm -f "$SERVICES_POINTER"
    ;;
env)
    dir="$(running_dir)" || die "no services running: scripts/services.sh start"
    cat "$dir/env"
    ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
