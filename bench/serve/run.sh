#!/usr/bin/env bash
# bench/serve: imops serve against BentoML (same network, same weights, one
# after the other) under wrk at concurrency 1, 8 and 64: requests/s, p50/p99
# latency and resident memory side by side, with ratios (median of 3 runs).
# Usage: bench/serve/run.sh [bench.py options]   (IMOPS_BIN: the imops binary; default build/imops)
# Not part of `make test`: run it with `make bench-serve`.
set -euo pipefail
cd "$(dirname "$0")/../.."
IMOPS_BIN=${IMOPS_BIN:-build/imops}
VENV=bench/.venv-bentoml
command -v wrk >/dev/null || { echo "bench/serve: wrk is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
[ -x "$IMOPS_BIN" ] || { echo "bench/serve: $IMOPS_BIN not found; run make build or set IMOPS_BIN" >&2; exit 1; }
if [ ! -f "$VENV/.ok" ] || [ bench/serve/requirements.txt -nt "$VENV/.ok" ]; then
  echo "bench/serve: installing BentoML into $VENV" >&2
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  # keep Debian's numpy (torch is built against it)
  echo "numpy==$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)')" > "$VENV/constraints.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$VENV/constraints.txt" -r bench/serve/requirements.txt
  touch "$VENV/.ok"
fi
mkdir -p .bench/serve
exec /usr/bin/python3 bench/serve/bench.py --imops "$IMOPS_BIN" --bentoml "$VENV/bin/bentoml" \
  --json .bench/serve/results.json "$@"
