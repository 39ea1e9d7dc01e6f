#!/bin/bash
# Convolution kernels, imops cpu backend vs ref vs PyTorch, side by side:
# times PyTorch first (tuned malloc settings from reference/perf-anchors.md,
# 2 threads, NCHW and channels_last), then bench_kernels, which prints its
# figures beside PyTorch's. Usage: bench/kernels/run.sh [BUILD_DIR] [bench_kernels options]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
shift || true
[ -x "$build/bench_kernels" ] || cmake --build "$build" --target bench_kernels
table=$(mktemp)
trap 'rm -f "$table"' EXIT
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456 \
  /usr/bin/python3 "$here/torch_conv.py" --table "$table"
echo
"$build/bench_kernels" --torch "$table" "$@"
