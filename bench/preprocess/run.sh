#!/usr/bin/env bash
# Runs bench/preprocess with Debian's python3 (numpy, PIL, torch, torchvision).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 bench/preprocess/bench_preprocess.py "$@"
