#!/bin/sh
# bench/sweep/hyperband.sh: the compute hyperband saves on a cheap real
# training objective. The same random sweep (same seed, so the same trial
# parameters) runs twice on a generated surface set, without and with
# early_terminate hyperband; it prints the epochs trained, the wall time and
# the best val_loss of each. Usage: bench/sweep/hyperband.sh [TRIALS] [EPOCHS]
# (default 12 trials of 6 epochs); IMOPS_BIN (default build/imops).
set -eu
cd "$(dirname "$0")/../.."
IMOPS=${IMOPS_BIN:-build/imops}
PY=${PY:-.venv/bin/python}
TRIALS=${1:-12}
EPOCHS=${2:-6}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$IMOPS" datagen surface --out "$W/data" --count 400 --size 64 --seed 11 --no-sheet > /dev/null 2>&1
for mode in off on; do
  {
    echo "name: hb-$mode"
    echo "method: random"
    echo "metric: {name: val_loss, goal: minimize}"
    echo "parameters:"
    echo "  lr: {distribution: log_uniform_values, min: 0.0003, max: 0.5}"
    echo "  optimizer: {values: [adam, sgd]}"
    echo "  batch_size: {values: [16, 32]}"
    echo "  img_size: {value: 32}"
    echo "  epochs: {value: $EPOCHS}"
    echo "run_cap: $TRIALS"
    [ "$mode" = on ] && echo "early_terminate: {type: hyperband, min_iter: 1, eta: 2}"
  } > "$W/$mode.yaml"
done
"$IMOPS" preprocess --data "$W/data" --img-size 32 > /dev/null 2>&1
for mode in off on; do
  start=$(date +%s.%N)
  IMOPS_HOME="$W/ws-$mode" IMOPS_NUM_THREADS=1 "$IMOPS" sweep run "$W/$mode.yaml" --data "$W/data" --seed 5 \
    --parallel 1 > "$W/$mode.out" 2>&1
  end=$(date +%s.%N)
  id=$(tail -1 "$W/$mode.out" | awk '{print $2}')
  IMOPS_HOME="$W/ws-$mode" "$IMOPS" sweep show "$id" --json > "$W/$mode.json"
  echo "$start $end" > "$W/$mode.time"
done
"$PY" - "$W" <<'PYEOF'
import json, sys
w = sys.argv[1]
rows = {}
for mode in ("off", "on"):
    d = json.load(open(f"{w}/{mode}.json"))
    t0, t1 = map(float, open(f"{w}/{mode}.time").read().split())
    epochs = sum(t["steps"] for t in d["trials"])
    fin = [t["value"] for t in d["trials"] if t["state"] == "FINISHED" and t["value"] is not None]
    rows[mode] = (epochs, t1 - t0, min(fin) if fin else float("nan"), sum(t["state"] == "PRUNED" for t in d["trials"]))
print(f"{'hyperband':<10}{'epochs':>8}{'seconds':>9}{'best val_loss':>15}{'pruned':>8}")
for mode, (e, s, b, p) in rows.items():
    print(f"{mode:<10}{e:>8}{s:>9.1f}{b:>15.4f}{p:>8}")
(e0, s0, b0, _), (e1, s1, b1, _) = rows["off"], rows["on"]
print(f"hyperband trained {e1}/{e0} epochs ({100 * (1 - e1 / e0):.0f}% saved), {s1:.1f}/{s0:.1f} s; "
      f"best val_loss {'equal' if abs(b1 - b0) < 1e-9 else f'{b1:.4f} vs {b0:.4f}'}")
PYEOF
