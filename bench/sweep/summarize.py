"""Median best value after 10, 25 and 50 trials per function and search,
imops and Optuna side by side, from the JSON lines of bench_sweep and
optuna_bench.py (stdin or files)."""
import fileinput
import json
import statistics
from collections import defaultdict

runs = defaultdict(list)
for line in fileinput.input():
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        runs[(r["function"], r["impl"], r["method"])].append(r["best"])

COLS = [("imops", "random"), ("optuna", "random"), ("imops", "bayes"), ("optuna", "tpe")]
OPT = {"branin": 0.397887, "hartmann6": -3.32237, "mixed": 0.0}
print("median best value over seeds (lower is better; optimum in brackets)")
print(f"{'function':<22}{'trials':>7}" + "".join(f"{i + ' ' + m:>16}" for i, m in COLS) + f"{'bayes-tpe':>12}")
verdict = []
for fn in ("branin", "hartmann6", "mixed"):
    if not any(k[0] == fn for k in runs):
        continue
    for b, budget in enumerate((10, 25, 50)):
        cells, med = [], {}
        for col in COLS:
            vals = [r[b] for r in runs.get((fn, *col), [])]
            med[col] = statistics.median(vals) if vals else float("nan")
            cells.append(f"{med[col]:>16.4f}")
        diff = med[("imops", "bayes")] - med[("optuna", "tpe")]
        verdict.append(diff <= 0)
        n = len(runs.get((fn, "imops", "bayes"), []))
        label = f"{fn} [{OPT[fn]}]" if b == 0 else ""
        print(f"{label:<22}{budget:>7}" + "".join(cells) + f"{diff:>+12.4f}")
n_seeds = {len(v) for v in runs.values()}
print(f"seeds per cell: {sorted(n_seeds)}; imops bayes <= Optuna TPE at {sum(verdict)} of {len(verdict)} budgets")
