#!/usr/bin/env bash
# The lock files: requirements/<role>.txt, every package pinned with its hashes, resolved from pyproject.toml by uv.
#   scripts/lock.sh          re-resolve after a change to pyproject.toml (kept pins stay unless a range moved)
#   scripts/lock.sh --check  fail if a lock no longer matches pyproject.toml (what `make test` runs)
#   scripts/lock.sh --upgrade  move every pin to the newest release the ranges allow
# dev.txt is what `make` installs (every extra); edge.txt and origin.txt are what the Docker images install.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
MODE=${1:-}
# The images' and CI's platform: CPython 3.11 on glibc 2.36 (Debian 12, python:3.11-slim-bookworm).
COMMON=(--quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_36
        --no-header --annotation-style line)
declare -A EXTRAS=([dev]="--extra dev --extra infra" [edge]="--extra edge" [origin]="--extra origin")
status=0
for role in dev edge origin; do
    lock=requirements/$role.txt
    # shellcheck disable=SC2086
    if [[ $MODE == --check ]]; then
        fresh=$(mktemp)
        cp "$lock" "$fresh"
        "$UV" pip compile pyproject.toml ${EXTRAS[$role]} "${COMMON[@]}" -o "$fresh"
        if ! diff -u "$lock" "$fresh" > "$fresh.diff"; then
            echo "requirements/$role.txt is out of date with pyproject.toml: run scripts/lock.sh" >&2
            head -40 "$fresh.diff" >&2
            status=1
        fi
        rm -f "$fresh" "$fresh.diff"
    else
        "$UV" pip compile pyproject.toml ${EXTRAS[$role]} "${COMMON[@]}" ${MODE:+$MODE} -o "$lock"
        echo "$lock: $(grep -c '==' "$lock") packages"
    fi
done
exit $status
