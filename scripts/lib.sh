# shellcheck shell=bash
# Shared logic for scripts/test.sh, bench.sh, services.sh, lint.sh and demo.sh. Source it; do not run it.
#
# Everything here must work on a fresh Debian 12 machine, as root (CI) or as a developer with sudo.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PG_BIN=/usr/lib/postgresql/15/bin
# Where scripts/services.sh remembers the services it started, so they outlive one test run.
SERVICES_POINTER="$REPO_ROOT/.tmp/services.dir"

section() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}
is_root() { [[ "$(id -u)" == 0 ]]; }

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------------------
# System packages
# ---------------------------------------------------------------------------------------------------------

_APT_UPDATED=0

_apt_update() {
    ((_APT_UPDATED)) && return 0
    note "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq && _APT_UPDATED=1
}

# apt_install PKG...: install with apt-get, running `apt-get update` only when the package lists lack a
# candidate or are stale (an install that fails is retried once after an update).
apt_install() {
    local pkg
    for pkg in "$@"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            _apt_update || return 1
            break
        fi
    done
    local cmd=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@")
    if ! as_root "${cmd[@]}"; then
        ((_APT_UPDATED)) && return 1
        _apt_update || return 1
        as_root "${cmd[@]}" || return 1
    fi
}

ensure_system_packages() {
    section "System packages"
    if [[ -x "$PG_BIN/postgres" ]]; then
        note "PostgreSQL 15: present"
    else
        note "PostgreSQL 15: installing postgresql-15"
        apt_install postgresql-15 || die "could not install postgresql-15 (needs root or sudo, and apt)"
        [[ -x "$PG_BIN/postgres" ]] || die "postgresql-15 installed but $PG_BIN/postgres is missing"
    fi
    if is_root && ! id postgres >/dev/null 2>&1; then
        die "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as"
    fi
    if command -v promtool >/dev/null; then
        note "promtool: present"
    else
        note "promtool: installing prometheus"
        # Tolerated for now: only the metrics/rules tests need promtool, and they say so when it is missing.
        apt_install prometheus || warn "could not install prometheus; PROMTOOL will not be set"
    fi
    # The console's browser test (tests/ops/test_console.py) drives Debian's chromium through Playwright.
    if command -v chromium >/dev/null; then
        note "chromium: present"
    else
        note "chromium: installing chromium"
        apt_install chromium || die "could not install chromium (the console's browser test needs it)"
    fi
}

# ---------------------------------------------------------------------------------------------------------
# Python virtualenv
# ---------------------------------------------------------------------------------------------------------

_py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

find_python() {
    local c
    for c in python3.11 python3; do
        if command -v "$c" >/dev/null && _py_ok "$c"; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

# ensure_venv dev|runtime: create .venv if needed and install the package into it (editable), with the dev
# extra for "dev". Reinstalls only when pyproject.toml changed or a dev install is wanted over a runtime one.
ensure_venv() {
    local want="$1" stamp="$VENV/.replicator-install" hash have_hash="" have_kind=""
    section "Python environment ($VENV, $want)"
    if [[ -x "$VENV/bin/python" ]] && ! _py_ok "$VENV/bin/python"; then
        note "existing .venv has Python < 3.11: recreating"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        local py
        py="$(find_python)" || die "need Python >= 3.11 as python3.11 or python3"
        note "creating .venv with $py ($("$py" --version 2>&1))"
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            # Debian's own Python ships venv/ensurepip separately.
            rm -rf "$VENV"
            apt_install python3-venv || die "could not install python3-venv"
            "$py" -m venv "$VENV" || die "could not create $VENV"
        fi
    fi
    hash="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
    [[ -f "$stamp" ]] && read -r have_hash have_kind <"$stamp"
    if [[ "$have_hash" == "$hash" && ("$have_kind" == dev || "$have_kind" == "$want") ]]; then
        note "up to date (pyproject.toml unchanged since the last install)"
        return 0
    fi
    local target="."
    [[ "$want" == dev ]] && target=".[dev]"
    note "pip install -e '$target' (the first time takes a few minutes: pyarrow, duckdb and boto3 are large)"
    rm -f "$stamp"
    # On a terminal pip says what it collects, downloads and installs (scripts/demo.sh on a fresh machine
    # would otherwise sit silent for minutes); elsewhere it stays quiet.
    local quiet=(-q)
    [[ -t 1 ]] && quiet=()
    # The filter drops pip's warnings about configured local indexes that do not exist on this machine.
    local pip=("$VENV/bin/python" -m pip install "${quiet[@]}" --disable-pip-version-check -e "$target")
    if ! (cd "$REPO_ROOT" && "${pip[@]}") 2>&1 |
        { grep -v 'is ignored: it is neither a file nor a directory' || true; }; then
        die "pip install failed"
    fi
    echo "$hash $want" >"$stamp"
}

# ensure_checkov: checkov (IaC scanner for deploy/, tests/ops/test_deploy.py) in its own venv, .venv-checkov: its
# pinned dependencies (an older boto3, networkx, packaging) would clash with the project's dev extra.
CHECKOV_VERSION=3.3.30
ensure_checkov() {
    local venv="$REPO_ROOT/.venv-checkov" py
    section "checkov ($venv)"
    if [[ -x "$venv/bin/checkov" ]] && [[ "$("$venv/bin/checkov" --version 2>/dev/null)" == "$CHECKOV_VERSION" ]]; then
        note "checkov $CHECKOV_VERSION: present"
        return 0
    fi
    py="$(find_python)" || die "need Python >= 3.11 as python3.11 or python3"
    rm -rf "$venv"
    "$py" -m venv "$venv" || die "could not create $venv"
    note "pip install checkov==$CHECKOV_VERSION (about 300 MB, a minute)"
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION" 2>&1 |
        { grep -v 'is ignored: it is neither a file nor a directory' || true; }; then
        die "pip install checkov failed"
    fi
    [[ -x "$venv/bin/checkov" ]] || die "checkov installed but $venv/bin/checkov is missing"
}

# ---------------------------------------------------------------------------------------------------------
# Services: a throwaway PostgreSQL 15 cluster and moto's S3 server, both on 127.0.0.1 free ports.
# All state lives in one directory (SVC_DIR); DIR/env holds the exports for it.
# ---------------------------------------------------------------------------------------------------------

free_port() {
    "$VENV/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Run a PostgreSQL binary as the cluster owner: the 'postgres' user when we are root.
_pg() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

svc_new_dir() {
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/replicator-svc.XXXXXX")"
    chmod 755 "$dir" # the postgres user must reach $dir/pg
    mkdir "$dir/pg"
    is_root && chown postgres:postgres "$dir/pg"
    echo "$dir"
}

_pg_start() {
    local dir="$1" data="$1/pg/data" port attempt
    _pg "$PG_BIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    # Test-only settings: logical decoding on, durability off (a crash loses a throwaway cluster anyway).
    cat >>"$data/postgresql.conf" <<EOF

# replicator test cluster (scripts/lib.sh)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/pg'
wal_level = logical
# Room for the pytest-xdist workers of scripts/test.sh: each test with a PostgreSQL source holds a slot and
# a walsender (some two or three), and every database of a test is dropped with its slots.
max_replication_slots = 64
max_wal_senders = 64
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    # The free port can be taken between probing and binding: retry with another.
    for attempt in 1 2 3; do
        port="$(free_port)"
        if _pg "$PG_BIN/pg_ctl" -D "$data" -l "$dir/pg/server.log" -o "-p $port" -w -t 60 start \
            >/dev/null; then
            PG_PORT="$port"
            return 0
        fi
        note "PostgreSQL did not start on port $port (attempt $attempt)"
    done
    tail -n 30 "$dir/pg/server.log" >&2
    return 1
}

_pg_stop() {
    local data="$1/pg/data"
    [[ -f "$data/postmaster.pid" ]] || return 0
    _pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 20 stop >/dev/null 2>&1 ||
        _pg "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 20 stop >/dev/null 2>&1 ||
        kill -9 "$(head -n 1 "$data/postmaster.pid")" 2>/dev/null || true
}

_s3_answers() {
    "$VENV/bin/python" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=1)
except urllib.error.HTTPError:
    pass  # any HTTP answer means the server is up
EOF
}

_moto_start() {
    local dir="$1" port pid i
    [[ -x "$VENV/bin/moto_server" ]] || die "$VENV/bin/moto_server missing: the dev extra is not installed"
    port="$(free_port)"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/moto.pid"
    for ((i = 0; i < 300; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$dir/moto.log" >&2
            return 1
        fi
        if _s3_answers "$port"; then
            S3_PORT="$port"
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$dir/moto.log" >&2
    return 1
}

_moto_stop() {
    local pidfile="$1/moto.pid" pid i
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    if kill "$pid" 2>/dev/null; then
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# svc_start DIR: start both services with their state in DIR and write DIR/env.
svc_start() {
    local dir="$1" t0=$SECONDS
    section "Services"
    _pg_start "$dir" || die "PostgreSQL 15 did not start (log above)"
    note "PostgreSQL 15 on 127.0.0.1:$PG_PORT (data in $dir/pg/data)"
    _moto_start "$dir" || die "moto's S3 server did not start (log above)"
    note "moto S3 on http://127.0.0.1:$S3_PORT"
    {
        echo "export REPLICATOR_TEST_PG_DSN=\"host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres\""
        echo "export REPLICATOR_TEST_S3_ENDPOINT=\"http://127.0.0.1:$S3_PORT\""
        echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
        if command -v promtool >/dev/null; then
            echo "export PROMTOOL=\"$(command -v promtool)\""
        fi
    } >"$dir/env"
    note "started in $((SECONDS - t0)) s"
}

# svc_stop DIR: stop both services and remove DIR. Safe to call twice or on a half-started DIR.
svc_stop() {
    local dir="$1"
    [[ -n "$dir" && -d "$dir" ]] || return 0
    _moto_stop "$dir"
    _pg_stop "$dir"
    rm -rf "$dir"
}

# use_throwaway_services: start fresh services for this script, export their env, and stop them and remove
# their data whenever the script exits (success, failure, Ctrl-C or SIGTERM), keeping its exit code.
SVC_DIR=""
use_throwaway_services() {
    trap _svc_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    SVC_DIR="$(svc_new_dir)"
    svc_start "$SVC_DIR"
    # shellcheck source=/dev/null
    source "$SVC_DIR/env"
}

# shellcheck disable=SC2317  # called through trap
_svc_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$SVC_DIR" ]]; then
        section "Stopping services"
        svc_stop "$SVC_DIR"
        SVC_DIR=""
    fi
    exit "$rc"
}

# use_running_services: export the env of the services that `scripts/services.sh start` left running.
use_running_services() {
    local dir
    section "Services (reusing those of scripts/services.sh)"
    dir="$(cat "$SERVICES_POINTER" 2>/dev/null || true)"
    if [[ -z "$dir" ]] || ! svc_alive "$dir"; then
        die "no running services: run scripts/services.sh start first"
    fi
    # shellcheck source=/dev/null
    source "$dir/env"
    note "PostgreSQL: $REPLICATOR_TEST_PG_DSN; S3: $REPLICATOR_TEST_S3_ENDPOINT"
}

# svc_alive DIR: both services of DIR answer.
svc_alive() {
    local dir="$1" pg_port s3_port
    [[ -f "$dir/env" ]] || return 1
    pg_port="$(sed -n 's/.*REPLICATOR_TEST_PG_DSN=.*port=\([0-9]*\).*/\1/p' "$dir/env")"
    s3_port="$(sed -n 's/.*REPLICATOR_TEST_S3_ENDPOINT=.*:\([0-9]*\)".*/\1/p' "$dir/env")"
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && _s3_answers "$s3_port"
}

# ---------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------

# run_step NAME CMD...: run a check, print its outcome, and remember the first failure's exit code in
# FIRST_FAILURE (so every check runs and reports, but the script exits with the first failure).
FIRST_FAILURE=0
run_step() {
    local name="$1" rc=0 t0=$SECONDS
    shift
    section "$name"
    (cd "$REPO_ROOT" && "$@") || rc=$?
    if ((rc == 0)); then
        note "$name: ok ($((SECONDS - t0)) s)"
    else
        note "$name: FAILED with exit code $rc ($((SECONDS - t0)) s)"
        ((FIRST_FAILURE == 0)) && FIRST_FAILURE=$rc
    fi
    return 0
}

run_lint() {
    run_step "ruff check" "$VENV/bin/ruff" check .
    run_step "ruff format --check" "$VENV/bin/ruff" format --check .
    run_step "mypy" "$VENV/bin/mypy"
}
