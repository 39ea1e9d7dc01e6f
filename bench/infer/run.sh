#!/bin/bash
# Inference race: imops' folded inference path (bench_infer) against ONNX Runtime
# (CPU, 2 threads, on the ONNX file imops exported for the same model) and PyTorch
# eager (tuned: channels_last + the malloc settings of reference/perf-anchors.md;
# and at its defaults), single-image latency p50/p99 and batch-64 throughput, per
# architecture at its usual size, all in one run, printed side by side with ratios.
#
# Usage: bench/infer/run.sh [BUILD_DIR]   (env: REPS, BATCH_REPS, ROUNDS, ARCHS="surfacenet:112:20:200 ...")
# An ARCHS entry is ARCH:SIZE[:BATCH_REPS[:REPS]]: surfacenet's batch of 64 takes 10-40 ms, so its
# defaults time 20 batches and 200 single images (3 batches, a few milliseconds of work, were at
# the mercy of one burst of the VM's neighbours), resnet18's and convnext-atto@224's 40 single images
# (0.3-0.4 s of imops; 13 let one burst put convnext's latency over ORT's in one round of four).
# Within a round each figure is the median of REPS single-image runs (p99 beside
# it) and of BATCH_REPS batch runs, after warm-up; the runners take turns per
# architecture. The whole race runs ROUNDS times (default 3): the tables show
# each runner's median over the rounds, and each ratio is the median of the
# rounds' own ratios (runners measured minutes apart on this shared VM see
# different speeds; within a round they ran seconds apart).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=/usr/bin/python3
[ -x "$build/bench_infer" ] || cmake --build "$build" --target bench_infer
ARCHS=${ARCHS:-"surfacenet:112:20:200 resnet18:224:3:40 convnext-atto:112 convnext-atto:224:3:40"}
REPS=${REPS:-40}
BATCH_REPS=${BATCH_REPS:-3}
ROUNDS=${ROUNDS:-3}
export IMOPS_NUM_THREADS=2 OMP_NUM_THREADS=2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tuned_env=(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456)
results=$tmp/results.jsonl
tag() { sed "s/^{/{\"round\": $round, /"; } # a runner's JSON line, marked with its round
for round in $(seq 1 "$ROUNDS"); do
for spec in $ARCHS; do
  IFS=: read -r arch size breps sreps <<< "$spec"
  breps=${breps:-$BATCH_REPS}
  # Fewer repetitions for the big models at 224.
  reps=$REPS
  [ "$size" -ge 224 ] && reps=$((REPS / 3 > 10 ? REPS / 3 : 10))
  reps=${sreps:-$reps}
  echo "== round $round/$ROUNDS: $arch @ $size ($reps single-image runs, $breps batches of 64 each)" >&2
  common=(--arch "$arch" --size "$size" --reps "$reps" --batch-reps "$breps")
  # Each runner's JSON line goes to the results and, as progress, to stderr.
  "$build/bench_infer" "${common[@]}" --onnx "$tmp/$arch-$size.onnx" | tag | tee -a "$results" >&2
  "$py" "$here/peers.py" ort "${common[@]}" --onnx "$tmp/$arch-$size.onnx" | tag | tee -a "$results" >&2
  env "${tuned_env[@]}" "$py" "$here/peers.py" torch "${common[@]}" --channels-last | tag | tee -a "$results" >&2
  "$py" "$here/peers.py" torch "${common[@]}" | tag | tee -a "$results" >&2
done
done
"$py" - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
runs = {}  # (arch, size) -> runner -> [rows, one per round]
for r in rows:
    runs.setdefault((r["arch"], r["size"]), {}).setdefault(r["runner"], []).append(r)
med = statistics.median
rounds = max(len(v) for d in runs.values() for v in d.values())
def f(v, d=2):
    return f"{v:.{d}f}"
def m(d, runner, key):
    return med([r[key] for r in d[runner]])
def per_round(d, key, peers, best):
    """Each round's imops figure over the best of the peers' figures in the same round."""
    out = []
    for i, r in enumerate(d["imops"]):
        vals = [d[p][i][key] for p in peers if i < len(d[p])]
        if vals:
            out.append(r[key] / best(vals))
    return out
def ratio(d, key, peers, best):
    return med(per_round(d, key, peers, best))
TORCH = ["torch-tuned", "torch-default"]
print()
print(f"Medians over {rounds} round(s); a ratio is the median of the rounds' ratios")
print("Single-image latency, ms: p50 (p99); ratio = imops / peer p50 (< 1: imops faster)")
print(f"{'model':<20} {'imops':>16} {'ORT':>16} {'torch tuned':>16} {'torch default':>16} {'vs ORT':>7} {'vs torch':>8}")
for (arch, size), d in runs.items():
    cell = lambda k: f"{f(m(d, k, 'p50_ms'))} ({f(m(d, k, 'p99_ms'), 1)})"
    print(f"{arch + '@' + str(size):<20} {cell('imops'):>16} {cell('ort'):>16} {cell('torch-tuned'):>16} "
          f"{cell('torch-default'):>16} {ratio(d, 'p50_ms', ['ort'], min):>7.2f} "
          f"{ratio(d, 'p50_ms', TORCH, min):>8.2f}")
print()
print("Batch-64 throughput, img/s (median); ratio = imops / peer (> 1: imops faster)")
print(f"{'model':<20} {'imops':>10} {'ORT':>10} {'torch tuned':>12} {'torch default':>14} {'vs ORT':>7} {'vs torch':>8}")
for (arch, size), d in runs.items():
    print(f"{arch + '@' + str(size):<20} {f(m(d, 'imops', 'img_s'), 1):>10} {f(m(d, 'ort', 'img_s'), 1):>10} "
          f"{f(m(d, 'torch-tuned', 'img_s'), 1):>12} {f(m(d, 'torch-default', 'img_s'), 1):>14} "
          f"{ratio(d, 'img_s', ['ort'], max):>7.2f} {ratio(d, 'img_s', TORCH, max):>8.2f}")
print()
print("Each round's ratios (the spread behind the medians): latency to ORT's and to the better PyTorch")
print("setting's, batch-64 throughput to the better PyTorch setting's")
for (arch, size), d in runs.items():
    spread = lambda key, peers, best: " ".join(f"{x:.2f}" for x in per_round(d, key, peers, best))
    print(f"{arch + '@' + str(size):<20} latency/ORT {spread('p50_ms', ['ort'], min)} | latency/torch "
          f"{spread('p50_ms', TORCH, min)} | batch/torch {spread('img_s', TORCH, max)}")
print()
print("imops, one profiled batch of 64: share of the forward in the cpu backend's planned steps (oneDNN's")
print("primitives and imops' Winograd kernels), and in NCHW<->blocked reorders")
for (arch, size), d in runs.items():
    i = d["imops"][-1]
    if i.get("lanes"):
        print(f"{arch + '@' + str(size):<20} runs as {i['lanes']} batch lanes, one image at a time each (shares not profiled)")
    elif "reorder_share" in i:
        print(f"{arch + '@' + str(size):<20} planned {100 * i['onednn_share']:5.1f}%   reorders {100 * i['reorder_share']:5.1f}%")
vers = {r["runner"]: r.get("version", "") for r in rows}
print()
print(f"2 threads each; ONNX Runtime {vers.get('ort', '?')}, PyTorch {vers.get('torch-tuned', '?')}; "
      "torch vs column: against the better of its two settings")
EOF
