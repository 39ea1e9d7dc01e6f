#!/usr/bin/env bash
# bench/track: imops server against mlflow server (SQLite), log_batch req/s and
# run-search latency over 10,000 runs, same load driver for both, median of 3.
# Usage: bench/track/run.sh [BUILD_DIR] [driver options, e.g. --runs 2000]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
shift || true
PY=${PY:-.venv/bin/python}
exec "$PY" bench/track/bench_track.py "$(realpath "$BUILD/imops")" "$@"
