#!/usr/bin/python3
"""The peers of bench/infer: ONNX Runtime (CPU, 2 threads, on the ONNX file that
imops itself exported for the same model) and PyTorch eager (the equivalent
module: SurfaceNet of tools/ref, torchvision's resnet18, ConvNeXt-atto), eval
mode, no_grad, 2 threads, optionally channels_last (the malloc settings of
reference/perf-anchors.md come from the environment run.sh sets).

  peers.py ort   --arch A --size S --onnx FILE [--batch 64 --reps 100 --batch-reps 5]
  peers.py torch --arch A --size S [--channels-last] [...]

Prints one JSON object: single-image latency p50/p99 (ms) and the median batch
throughput (img/s), measured as bench_infer measures imops."""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def pct(v, p):
    v = sorted(v)
    i = max(0, min(len(v) - 1, math.ceil(p * len(v)) - 1))
    return v[i]


def measure(run1, runb, batch, reps, batch_reps):
    for _ in range(5):
        run1()
    lat = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run1()
        lat.append((time.perf_counter() - t0) * 1e3)
    runb()
    tp = []
    for _ in range(batch_reps):
        t0 = time.perf_counter()
        runb()
        tp.append(batch / (time.perf_counter() - t0))
    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "img_s": pct(tp, 0.5)}


def torch_model(arch):
    import torchvision
    sys.path.insert(0, str(ROOT / "tools" / "ref"))
    from gen_model_fixtures import SurfaceNet, convnext_atto
    if arch == "surfacenet":
        return SurfaceNet(num_classes=2)
    if arch == "resnet18":
        return torchvision.models.resnet18(num_classes=2)
    if arch == "convnext-atto":
        return convnext_atto(num_classes=2)
    raise SystemExit(f"peers.py: no PyTorch module for {arch}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runner", choices=["ort", "torch"])
    ap.add_argument("--arch", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--onnx")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--batch-reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((a.batch, 3, a.size, a.size), dtype=np.float32)
    x1 = np.ascontiguousarray(xb[:1])
    out = {"runner": a.runner, "arch": a.arch, "size": a.size, "threads": a.threads, "batch": a.batch}
    if a.runner == "ort":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        s = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
        out["version"] = ort.__version__
        out.update(measure(lambda: s.run(None, {"image": x1}), lambda: s.run(None, {"image": xb}), a.batch, a.reps,
                           a.batch_reps))
    else:
        import torch
        torch.set_num_threads(a.threads)
        m = torch_model(a.arch).eval()
        t1, tb = torch.from_numpy(x1), torch.from_numpy(xb)
        if a.channels_last:
            m = m.to(memory_format=torch.channels_last)
            t1, tb = t1.to(memory_format=torch.channels_last), tb.to(memory_format=torch.channels_last)
            out["runner"] = "torch-tuned"
        else:
            out["runner"] = "torch-default"
        out["version"] = torch.__version__
        with torch.no_grad():
            out.update(measure(lambda: m(t1), lambda: m(tb), a.batch, a.reps, a.batch_reps))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
