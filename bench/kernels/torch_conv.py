#!/usr/bin/python3
"""PyTorch's side of bench/kernels: GFLOP/s of the same convolutions as
bench_conv.c (resnet18 at 112 and SurfaceCNN layers), forward, backward-data
and backward-weights, and milliseconds of the same memory-bound ops (batch
norm, ReLU, max pool, layer norm, GELU), with 2 threads, in NCHW and in
channels_last.

    /usr/bin/python3 bench/kernels/torch_conv.py [--batch 64] [--reps 7] [--table FILE]

Prints readable tables (medians); --table also writes "conv layer op gflops_nchw gflops_cl
best_nchw best_cl" and "xop index ms_nchw ms_cl best_nchw best_cl" lines (median, then best
of the runs) that `bench_kernels --torch FILE` prints beside its own. Each figure is the
median (and best) of --reps runs after two warm-ups. For PyTorch at its best, run with the
malloc settings of reference/perf-anchors.md (run.sh does).
"""
import argparse
import statistics
import time

import torch

# name, C, H, K, R, stride, pad, bias: the same list, in the same order, as bench_conv.c.
LAYERS = [
    ("r18.conv1 3-64 k7s2 @112", 3, 112, 64, 7, 2, 3, False),
    ("r18.l1 64-64 k3 @28", 64, 28, 64, 3, 1, 1, False),
    ("r18.l2a 64-128 k3s2 @28", 64, 28, 128, 3, 2, 1, False),
    ("r18.l2ds 64-128 k1s2 @28", 64, 28, 128, 1, 2, 0, False),
    ("r18.l2 128-128 k3 @14", 128, 14, 128, 3, 1, 1, False),
    ("r18.l3a 128-256 k3s2 @14", 128, 14, 256, 3, 2, 1, False),
    ("r18.l3 256-256 k3 @7", 256, 7, 256, 3, 1, 1, False),
    ("r18.l4a 256-512 k3s2 @7", 256, 7, 512, 3, 2, 1, False),
    ("r18.l4 512-512 k3 @4", 512, 4, 512, 3, 1, 1, False),
    ("surf.c1 3-32 k3s2 @112", 3, 112, 32, 3, 2, 1, True),
    ("surf.c2 32-64 k3 @28", 32, 28, 64, 3, 1, 1, True),
    ("surf.c3 64-128 k3 @14", 64, 14, 128, 3, 1, 1, True),
]
OPS = ["fwd", "bwd_data", "bwd_weight"]
# The memory-bound ops of bench_conv.c's second table, same order: name, kind, shape, pool (k, s, p).
XOPS = [
    ("batchnorm fwd 64x64x56x56", "bn_fwd", (64, 64, 56, 56), None),
    ("batchnorm bwd 64x64x56x56", "bn_bwd", (64, 64, 56, 56), None),
    ("relu fwd 64x64x56x56", "relu_fwd", (64, 64, 56, 56), None),
    ("relu bwd 64x64x56x56", "relu_bwd", (64, 64, 56, 56), None),
    ("maxpool k3s2p1 fwd 64x64x56x56", "mp_fwd", (64, 64, 56, 56), (3, 2, 1)),
    ("maxpool k3s2p1 bwd 64x64x56x56", "mp_bwd", (64, 64, 56, 56), (3, 2, 1)),
    ("maxpool k2s2 fwd 64x32x56x56", "mp_fwd", (64, 32, 56, 56), (2, 2, 0)),
    ("maxpool k2s2 bwd 64x32x56x56", "mp_bwd", (64, 32, 56, 56), (2, 2, 0)),
    ("layernorm fwd 64x28x28x96", "ln_fwd", (64, 28, 28, 96), None),
    ("layernorm bwd 64x28x28x96", "ln_bwd", (64, 28, 28, 96), None),
    ("gelu fwd 64x28x28x384", "gelu_fwd", (64, 28, 28, 384), None),
    ("gelu bwd 64x28x28x384", "gelu_bwd", (64, 28, 28, 384), None),
]


def bench(fn, reps):
    """(median, min) seconds of reps runs after two warm-ups."""
    for _ in range(2):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def run_layer(layer, batch, reps, channels_last):
    _, C, H, K, R, s, p, bias = layer
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, C, H, H).contiguous(memory_format=fmt)
    w = torch.randn(K, C, R, R).contiguous(memory_format=fmt)
    b = torch.randn(K) if bias else None
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, w, b, s, p)
    dy = torch.randn_like(y).contiguous(memory_format=fmt)
    flops = 2.0 * y.numel() * C * R * R
    conv_bwd = torch.ops.aten.convolution_backward
    bias_sizes = [K] if bias else None

    def fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w, b, s, p)

    def bwd_data():
        conv_bwd(dy, x, w, bias_sizes, [s, s], [p, p], [1, 1], False, [0, 0], 1, [True, False, False])

    def bwd_weight():
        conv_bwd(dy, x, w, bias_sizes, [s, s], [p, p], [1, 1], False, [0, 0], 1, [False, True, bias])

    # (median, best) GFLOP/s per op
    return [tuple(flops / t / 1e9 for t in bench(f, reps)) for f in (fwd, bwd_data, bwd_weight)]


def run_xop(xop, reps, channels_last):
    """Milliseconds per call of one memory-bound op (layer norm and GELU work on the last dim of
    an NHWC-shaped tensor, so their layout is always contiguous; the cl column repeats it)."""
    _, kind, shape, pool = xop
    aten = torch.ops.aten
    if kind.startswith("ln") or kind.startswith("gelu"):
        x = torch.randn(*shape)
        dy = torch.randn(*shape)
        C = shape[-1]
        w, b = torch.randn(C), torch.randn(C)
        if kind == "ln_fwd":
            f = lambda: aten.native_layer_norm(x, [C], w, b, 1e-6)
        elif kind == "ln_bwd":
            _, mean, rstd = aten.native_layer_norm(x, [C], w, b, 1e-6)
            f = lambda: aten.native_layer_norm_backward(dy, x, [C], mean, rstd, w, b, [True, True, True])
        elif kind == "gelu_fwd":
            f = lambda: aten.gelu(x)
        else:
            f = lambda: aten.gelu_backward(dy, x)
        return tuple(t * 1e3 for t in bench(f, reps))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(*shape).contiguous(memory_format=fmt)
    C = shape[1]
    w, b, rm, rv = torch.randn(C), torch.randn(C), torch.zeros(C), torch.ones(C)
    if kind == "bn_fwd":
        f = lambda: aten.native_batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5)
    elif kind == "bn_bwd":
        y, sm, si = aten.native_batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5)
        dy = torch.randn_like(y)
        f = lambda: aten.native_batch_norm_backward(dy, x, w, rm, rv, sm, si, True, 1e-5, [True, True, True])
    elif kind == "relu_fwd":
        f = lambda: aten.relu(x)
    elif kind == "relu_bwd":
        dy = torch.randn_like(x)
        f = lambda: aten.threshold_backward(dy, x, 0)
    else:
        k, s, p = pool
        y, idx = aten.max_pool2d_with_indices(x, [k, k], [s, s], [p, p])
        dy = torch.randn_like(y)
        if kind == "mp_fwd":
            f = lambda: aten.max_pool2d_with_indices(x, [k, k], [s, s], [p, p])
        else:
            f = lambda: aten.max_pool2d_with_indices_backward(dy, x, [k, k], [s, s], [p, p], [1, 1], False, idx)
    return tuple(t * 1e3 for t in bench(f, reps))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--table", help="write the figures for bench_kernels --torch")
    a = ap.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, median of {a.reps}")
    print(f"{'layer':26s} {'op':10s} {'nchw':>8s} {'ch_last':>8s}  GFLOP/s (median; best in the table file)")
    rows = []
    for li, layer in enumerate(LAYERS):
        nchw = run_layer(layer, a.batch, a.reps, False)
        cl = run_layer(layer, a.batch, a.reps, True)
        for oi, op in enumerate(OPS):
            print(f"{layer[0]:26s} {op:10s} {nchw[oi][0]:8.1f} {cl[oi][0]:8.1f}", flush=True)
            rows.append(f"conv {li} {oi} {nchw[oi][0]:.2f} {cl[oi][0]:.2f} {nchw[oi][1]:.2f} {cl[oi][1]:.2f}")
    print(f"\n{'memory-bound op':32s} {'nchw':>8s} {'ch_last':>8s}  ms")
    for xi, xop in enumerate(XOPS):
        a_ms, b_ms = run_xop(xop, a.reps, False), run_xop(xop, a.reps, True)
        print(f"{xop[0]:32s} {a_ms[0]:8.2f} {b_ms[0]:8.2f}", flush=True)
        rows.append(f"xop {xi} {a_ms[0]:.3f} {b_ms[0]:.3f} {a_ms[1]:.3f} {b_ms[1]:.3f}")
    if a.table:
        with open(a.table, "w") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
