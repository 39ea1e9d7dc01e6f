#!/bin/bash
# Training throughput, imops against PyTorch on the same machine in the same
# run: for each model, bench_train (imops, cpu backend) and torch_train.py in
# three configurations (default; glibc malloc tuned; malloc tuned +
# channels_last, see reference/perf-anchors.md), each a process of its own
# (peak RSS per process), 2 threads, batch 64; then the machine's sgemm peak
# (dnnl_sgemm and torch.mm, 2048^3) and the table (summarize.py).
# Usage: bench/train/run.sh [BUILD_DIR] [OUT.jsonl]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
out=${2:-$(mktemp --suffix=.jsonl)}
[ -x "$build/bench_train" ] || cmake --build "$build" --target bench_train
: > "$out"
export IMOPS_NUM_THREADS=2 OMP_NUM_THREADS=2
py=/usr/bin/python3
tuned=(env MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456)
# model img channels classes steps-per-rep reps (medians of the reps; 2 warm-up steps)
rows=(
  "smallcnn 28 1 10 20 5"
  "surfacenet 112 3 2 10 5"
  "resnet18 112 3 2 3 5"
  "resnet18 224 3 2 1 3"
  "convnext-atto 112 3 2 2 3"
)
for row in "${rows[@]}"; do
  read -r model img ch cls steps reps <<< "$row"
  args=(--model "$model" --img "$img" --channels "$ch" --classes "$cls" --steps "$steps" --reps "$reps")
  echo "== $model @$img (load average $(cut -d" " -f1-3 /proc/loadavg))" >&2
  "$build/bench_train" "${args[@]}" | sed 's/^{/{"impl": "imops", /' >> "$out"
  $py "$here/torch_train.py" "${args[@]}" | sed 's/^{/{"impl": "torch-default", /' >> "$out"
  "${tuned[@]}" $py "$here/torch_train.py" "${args[@]}" | sed 's/^{/{"impl": "torch-malloc", /' >> "$out"
  "${tuned[@]}" $py "$here/torch_train.py" "${args[@]}" --channels-last | sed 's/^{/{"impl": "torch-malloc-cl", /' >> "$out"
done
echo "== sgemm peak" >&2
"$build/bench_train" --sgemm 2048 | sed 's/^{/{"impl": "dnnl_sgemm", /' >> "$out"
$py "$here/torch_train.py" --mm 2048 | sed 's/^{/{"impl": "torch.mm", /' >> "$out"
echo "raw results: $out" >&2
$py "$here/summarize.py" "$out"
