#!/bin/bash
# Inference race: imops' folded inference path (bench_infer) against ONNX Runtime
# (CPU, 2 threads, on the ONNX file imops exported for the same model) and PyTorch
# eager (tuned: channels_last + the malloc settings of reference/perf-anchors.md;
# and at its defaults), single-image latency p50/p99 and batch-64 throughput, per
# architecture at its usual size, all in one run, printed side by side with ratios.
#
# Usage: bench/infer/run.sh [BUILD_DIR]   (env: REPS, BATCH_REPS, ARCHS="surfacenet:112 ...")
# Each figure is the median of REPS single-image runs (p99 beside it) and of
# BATCH_REPS batch runs, after warm-up; the runners take turns per architecture.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=/usr/bin/python3
[ -x "$build/bench_infer" ] || cmake --build "$build" --target bench_infer
ARCHS=${ARCHS:-"surfacenet:112 resnet18:224 convnext-atto:112 convnext-atto:224"}
REPS=${REPS:-40}
BATCH_REPS=${BATCH_REPS:-3}
export IMOPS_NUM_THREADS=2 OMP_NUM_THREADS=2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tuned_env=(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456)
results=$tmp/results.jsonl
for spec in $ARCHS; do
  arch=${spec%%:*}
  size=${spec##*:}
  # Fewer repetitions for the big models at 224.
  reps=$REPS
  [ "$size" -ge 224 ] && reps=$((REPS / 3 > 10 ? REPS / 3 : 10))
  echo "== $arch @ $size ($reps single-image runs, $BATCH_REPS batches of 64 each)" >&2
  common=(--arch "$arch" --size "$size" --reps "$reps" --batch-reps "$BATCH_REPS")
  # Each runner's JSON line goes to the results and, as progress, to stderr.
  "$build/bench_infer" "${common[@]}" --onnx "$tmp/$arch-$size.onnx" | tee -a "$results" >&2
  "$py" "$here/peers.py" ort "${common[@]}" --onnx "$tmp/$arch-$size.onnx" | tee -a "$results" >&2
  env "${tuned_env[@]}" "$py" "$here/peers.py" torch "${common[@]}" --channels-last | tee -a "$results" >&2
  "$py" "$here/peers.py" torch "${common[@]}" | tee -a "$results" >&2
done
"$py" - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["arch"], r["size"]), {})[r["runner"]] = r
def f(v, d=2):
    return f"{v:.{d}f}"
print()
print("Single-image latency, ms: p50 (p99); ratio = imops / peer p50 (< 1: imops faster)")
print(f"{'model':<20} {'imops':>16} {'ORT':>16} {'torch tuned':>16} {'torch default':>16} {'vs ORT':>7} {'vs torch':>8}")
for (arch, size), d in by.items():
    i, o, tt, td = d["imops"], d["ort"], d["torch-tuned"], d["torch-default"]
    best = min(tt["p50_ms"], td["p50_ms"])
    cell = lambda r: f"{f(r['p50_ms'])} ({f(r['p99_ms'], 1)})"
    print(f"{arch + '@' + str(size):<20} {cell(i):>16} {cell(o):>16} {cell(tt):>16} {cell(td):>16} "
          f"{i['p50_ms'] / o['p50_ms']:>7.2f} {i['p50_ms'] / best:>8.2f}")
print()
print("Batch-64 throughput, img/s (median); ratio = imops / peer (> 1: imops faster)")
print(f"{'model':<20} {'imops':>10} {'ORT':>10} {'torch tuned':>12} {'torch default':>14} {'vs ORT':>7} {'vs torch':>8}")
for (arch, size), d in by.items():
    i, o, tt, td = d["imops"], d["ort"], d["torch-tuned"], d["torch-default"]
    best = max(tt["img_s"], td["img_s"])
    print(f"{arch + '@' + str(size):<20} {f(i['img_s'], 1):>10} {f(o['img_s'], 1):>10} {f(tt['img_s'], 1):>12} "
          f"{f(td['img_s'], 1):>14} {i['img_s'] / o['img_s']:>7.2f} {i['img_s'] / best:>8.2f}")
print()
print("imops, one profiled batch of 64: share of the forward in oneDNN steps, and in NCHW<->blocked reorders")
for (arch, size), d in by.items():
    i = d["imops"]
    if "reorder_share" in i:
        print(f"{arch + '@' + str(size):<20} oneDNN {100 * i['onednn_share']:5.1f}%   reorders {100 * i['reorder_share']:5.1f}%")
vers = {r["runner"]: r.get("version", "") for r in rows}
print()
print(f"2 threads each; ONNX Runtime {vers.get('ort', '?')}, PyTorch {vers.get('torch-tuned', '?')}; "
      "torch vs column: against the better of its two settings")
EOF
