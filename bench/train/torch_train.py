"""Training benchmark, PyTorch side: the same work as bench_train.c for one
model (SGD lr 0.01 momentum 0.9, cross-entropy, random data, batch 64) in one
configuration, printed as one JSON object: train_ips (median of --reps timed
runs of --steps steps after --warmup steps), min/max, eval-mode batch-64
img/s, batch-1 latency (median), peak RSS (ru_maxrss after training and at
the end) and the model's forward MACs (Conv2d and Linear, by forward hooks, as
reference/perf-anchors.md counts them); with --mm N only torch.mm's GFLOP/s.

  torch_train.py --model NAME [--img 112] [--channels 3] [--classes 2] [--channels-last] ...

The malloc settings of the tuned configuration are environment variables, so
run.sh sets them when it starts this process. Threads: torch.set_num_threads."""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "ref"))
from gen_model_fixtures import SurfaceNet, convnext_atto  # noqa: E402


def make_model(name, channels, classes):
    if name == "surfacenet":
        return SurfaceNet(num_classes=classes, in_channels=channels)
    if name == "smallcnn":
        return SurfaceNet(num_classes=classes, in_channels=channels, stem_stride=1)
    if name == "resnet18":
        m = torchvision.models.resnet18(num_classes=classes)
        if channels != 3:
            m.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        return m
    if name == "convnext-atto":
        return convnext_atto(classes)
    raise SystemExit(f"torch_train.py: unknown model {name}")


def count_macs(model, x):
    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            macs += out.numel() // out.shape[0] * k
        elif isinstance(mod, nn.Linear):
            macs += out.numel() // out.shape[0] * mod.in_features
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x[:1])
    for h in hs:
        h.remove()
    return macs


def mm_gflops(n):
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = []
    for r in range(9):
        t0 = time.perf_counter()
        torch.mm(a, b)
        if r >= 2:
            t.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(t) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--img", type=int, default=112)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--infer-reps", type=int, default=5)
    ap.add_argument("--lat-reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--mm", type=int, default=0, help="only time torch.mm on N x N x N (the GEMM peak)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.mm:
        print(json.dumps({"sgemm_n": a.mm, "sgemm_gflops": mm_gflops(a.mm), "threads": a.threads}))
        return
    if not a.model:
        ap.error("--model is required")
    torch.manual_seed(1)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = make_model(a.model, a.channels, a.classes)
    x = torch.randn(a.batch, a.channels, a.img, a.img)
    y = torch.randint(0, a.classes, (a.batch,))
    macs = count_macs(model, x)
    model = model.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    ips = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        ips.append(a.batch * a.steps / (time.perf_counter() - t0))
    rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    model.eval()
    inf = []
    lat = []
    with torch.no_grad():
        model(x)
        for _ in range(a.infer_reps):
            t0 = time.perf_counter()
            model(x)
            inf.append(a.batch / (time.perf_counter() - t0))
        x1 = x[:1].clone().contiguous(memory_format=fmt)
        for _ in range(3):
            model(x1)
        for _ in range(a.lat_reps):
            t0 = time.perf_counter()
            model(x1)
            lat.append((time.perf_counter() - t0) * 1e3)
    out = {"model": a.model, "img": a.img, "channels": a.channels, "batch": a.batch, "threads": a.threads,
           "channels_last": a.channels_last, "malloc_tuned": "MALLOC_MMAP_THRESHOLD_" in os.environ,
           "train_ips": statistics.median(ips), "train_ips_min": min(ips), "train_ips_max": max(ips),
           "infer_ips": statistics.median(inf), "latency_ms": statistics.median(lat),
           "peak_rss_train_kb": rss_train, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           "macs": macs, "torch": torch.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
