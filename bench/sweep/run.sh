#!/bin/sh
# bench/sweep: imops random and bayes (TPE) against Optuna's random and TPE
# samplers on Branin, Hartmann-6 and a mixed categorical/log-scale/integer
# function: the median best value after 10, 25 and 50 trials over SEEDS seeds.
# Usage: bench/sweep/run.sh [SEEDS] (default 10); needs build-*/bench_sweep
# (BUILD=dir, default build) and optuna in .venv (tests/requirements.txt).
set -eu
cd "$(dirname "$0")/../.."
SEEDS=${1:-10}
BUILD=${BUILD:-build}
PY=${PY:-.venv/bin/python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
[ -x "$BUILD/bench_sweep" ] || { echo "bench/sweep: $BUILD/bench_sweep is missing; build it first (make build)" >&2; exit 1; }
"$PY" -c "import optuna" 2>/dev/null || { echo "bench/sweep: optuna is missing: $PY -m pip install -r tests/requirements.txt" >&2; exit 1; }
echo "imops: $BUILD/bench_sweep $SEEDS" >&2
"$BUILD/bench_sweep" "$SEEDS" > "$OUT/imops.jsonl"
echo "optuna $("$PY" -c 'import optuna; print(optuna.__version__)'): bench/sweep/optuna_bench.py $SEEDS" >&2
"$PY" bench/sweep/optuna_bench.py "$SEEDS" > "$OUT/optuna.jsonl"
"$PY" bench/sweep/summarize.py "$OUT/imops.jsonl" "$OUT/optuna.jsonl"
