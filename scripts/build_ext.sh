#!/usr/bin/env bash
# Build the optional compiled helpers in place (today one: replicator/sources/postgres/_rowscan.c, the
# PostgreSQL source's row scanner; issue 16). Needs a C compiler and the Python headers, nothing from the
# network. Without it the package runs its pure-Python twin (same results, slower), so a failed build is
# reported and the script exits 0 unless REPLICATOR_EXT_REQUIRED=1.
#   scripts/build_ext.sh [python]     (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${1:-}"
if [[ -z "$py" ]]; then
    if [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
fi
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
repo="$(pwd)"
if [[ "$py" == */* ]]; then py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"; fi  # we change folder
# Run from the scratch folder: setuptools must not read the project's pyproject.toml here (its ext-modules
# table is for wheels and editable installs, and older setuptools refuse it).
if (cd "$build" && PYTHONWARNINGS=ignore "$py" - "$build" "$repo" <<'PY'
import sys
from setuptools import Extension, setup

build, repo = sys.argv[1], sys.argv[2]
setup(
    name="replicator-ext",
    ext_modules=[
        Extension(
            "replicator.sources.postgres._rowscan",
            [f"{repo}/replicator/sources/postgres/_rowscan.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Werror"],
        )
    ],
    script_args=["-q", "build_ext", "--build-lib", repo, "--build-temp", f"{build}/tmp"],
)
PY
)
then
    "$py" -c "from replicator.sources.postgres import rowscan; assert rowscan.COMPILED; print('compiled row scanner: built')"
else
    echo "build_ext: the compiled row scanner did not build; the pure-Python scanner will be used" >&2
    [[ "${REPLICATOR_EXT_REQUIRED:-}" == 1 ]] && exit 1
fi
exit 0
