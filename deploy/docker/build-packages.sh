#!/usr/bin/env bash
# Prints the Debian packages the image's builder stage needs: the project's list
# (scripts/install-deps.sh PKGS) less what only tests, benchmarks and fuzzers use
# (Python peers, data sets, clang/libomp for fuzzing, cmocka, prometheus, wrk, chromium).
# Usage: deploy/docker/build-packages.sh [path/to/install-deps.sh]
set -euo pipefail
deps=${1:-scripts/install-deps.sh}
PKGS=()
eval "$(sed -n '/^PKGS=(/,/^)/p' "$deps")"
[ ${#PKGS[@]} -gt 0 ] || { echo "build-packages.sh: no PKGS=( ... ) list in $deps" >&2; exit 1; }
printf '%s\n' "${PKGS[@]}" | grep -vE '^(python3.*|dataset-.*|clang|libomp-dev|libcmocka-dev|prometheus|wrk|chromium.*)$'
