"""The peer of bench_sweep.c: Optuna's TPESampler (defaults) and RandomSampler
on the same three functions and budgets, one JSON line per (sampler, function, seed)."""
import json
import math
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def branin(t):
    x1, x2 = t.suggest_float("x1", -5, 10), t.suggest_float("x2", 0, 15)
    b, c, s = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 * x1 + c * x1 - 6) ** 2 + 10 * (1 - s) * math.cos(x1) + 10


A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
     [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6(t):
    x = [t.suggest_float(f"x{i + 1}", 0, 1) for i in range(6)]
    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - 1e-4 * P[i][j]) ** 2 for j in range(6)))
                for i in range(4))


def mixed(t):
    k = ["a", "b", "c"].index(t.suggest_categorical("opt", ["a", "b", "c"]))
    lr = t.suggest_float("lr", 1e-5, 1.0, log=True)
    layers = t.suggest_int("layers", 1, 8)
    x = t.suggest_float("x", 0, 1)
    u = math.log10(lr) + 3 - [0.0, 0.5, 1.5][k]
    return u * u + 0.1 * (layers - 4) ** 2 + (x - 0.7) ** 2 + [0.2, 0.0, 0.5][k]


def main():
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    only = sys.argv[2] if len(sys.argv) > 2 else None
    for name, fn in (("branin", branin), ("hartmann6", hartmann6), ("mixed", mixed)):
        if only and name != only:
            continue
        for method in ("random", "tpe"):
            for s in range(seeds):
                sampler = optuna.samplers.TPESampler(seed=1000 + s) if method == "tpe" else \
                    optuna.samplers.RandomSampler(seed=1000 + s)
                study = optuna.create_study(sampler=sampler)
                best, at = math.inf, []
                for i in range(50):
                    trial = study.ask()
                    y = fn(trial)
                    study.tell(trial, y)
                    best = min(best, y)
                    if i + 1 in (10, 25, 50):
                        at.append(best)
                print(json.dumps({"impl": "optuna", "method": method, "function": name, "seed": s, "best": at}),
                      flush=True)


if __name__ == "__main__":
    main()
