#!/usr/bin/python3
"""PyTorch reference fixtures for the op-level parity test (tests/unit/test_backend_parity.c).

Writes tests/ref/<family>.safetensors: for each case, the inputs (float32), the
outputs and the gradients of loss = sum(y * dy) for a random dy, computed by
torch.nn.functional in float64 from the float32 inputs and rounded to float32
(so the fixtures are torch's function, not torch's float32 rounding). As a
sanity check the script also runs every case in float32 and requires it to
agree with the float64 result within the tolerance the C test uses.

Metadata per file: format "imops-ref-fixture", version "1", the torch version,
and "cases": a JSON list of {"name", "op", parameters...}; tensors are named
"<case>.<role>". Run with Debian's torch:

    /usr/bin/python3 tools/ref/gen_layer_fixtures.py [--out tests/ref]

The files are committed (CI does not need torch); keep them small.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_write  # noqa: E402

FORMAT, VERSION = "imops-ref-fixture", "1"
ATOL, RTOL = 1e-5, 1e-4  # the C test's tolerance: |a - b| <= ATOL + RTOL * |ref|


class Family:
    def __init__(self, name):
        self.name, self.cases, self.tensors = name, [], []

    def add(self, case, tensors):
        self.cases.append(case)
        for role, t in tensors.items():
            a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            if a.dtype == np.float64:
                a = a.astype(np.float32)
            elif a.dtype == np.int64:
                a = a.astype(np.int32)
            self.tensors.append((f"{case['name']}.{role}", a))

    def write(self, out):
        meta = {"format": FORMAT, "version": VERSION, "torch": torch.__version__,
                "generator": "tools/ref/gen_layer_fixtures.py", "cases": json.dumps(self.cases)}
        path = os.path.join(out, f"{self.name}.safetensors")
        n = st_write.write(path, self.tensors, meta)
        print(f"{path}: {len(self.cases)} cases, {len(self.tensors)} tensors, {n} bytes")
        return n


gen = torch.Generator().manual_seed(20240611)


def randn(*shape, scale=1.0):
    """float32 values (the inputs the C side sees), as float64 leaves."""
    t = (torch.randn(*shape, generator=gen) * scale).float()
    return t.double()


def f32(t):
    """Rounds to float32 values (kept as float64): every input must be exactly what the C side reads."""
    return t.float().double()


def run(fn, inputs, dy_shape_from=0):
    """Runs fn in float64 and float32 on the same (float32-representable) inputs.
    Returns (outputs64, grads64, dy). Checks the float32 run against float64."""
    results = {}
    dy = None
    for dt in (torch.float64, torch.float32):
        leaves = [x.detach().clone().to(dt).requires_grad_(x.is_floating_point()) if x is not None else None
                  for x in inputs]
        out = fn(*leaves)
        y = out[dy_shape_from] if isinstance(out, tuple) else out
        if dy is None:
            dy = randn(*y.shape)
        (y * dy.to(dt)).sum().backward()
        grads = [l.grad if (l is not None and l.requires_grad) else None for l in leaves]
        results[dt] = (out, grads)
    o64, g64 = results[torch.float64]
    o32, g32 = results[torch.float32]
    outs64 = o64 if isinstance(o64, tuple) else (o64,)
    outs32 = o32 if isinstance(o32, tuple) else (o32,)
    for a, b in list(zip(outs64, outs32)) + list(zip(g64, g32)):
        if a is None or not a.is_floating_point():
            continue
        a, b = a.detach().double(), b.detach().double()
        bad = ((a - b).abs() > ATOL + RTOL * a.abs()).sum().item()
        if bad:
            raise SystemExit(f"torch float32 disagrees with float64 beyond the test tolerance ({bad} elements)")
    return outs64, g64, dy


# ---------------------------------------------------------------------------------------------

def conv_family():
    fam = Family("conv2d")
    cases = [
        # name, x shape, w shape, stride, pad, dilation, groups, bias
        ("s1p1", (2, 3, 7, 5), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, True),
        ("s2p1g2", (3, 4, 9, 7), (6, 2, 3, 3), (2, 2), (1, 1), (1, 1), 2, True),
        ("dw7x7p3", (2, 8, 9, 8), (8, 1, 7, 7), (1, 1), (3, 3), (1, 1), 8, True),
        ("dil2p2", (1, 3, 9, 9), (4, 3, 3, 3), (1, 1), (2, 2), (2, 2), 1, False),
        ("1x1s2", (2, 6, 7, 5), (5, 6, 1, 1), (2, 2), (0, 0), (1, 1), 1, True),
        ("stem7x7s2p3", (1, 3, 17, 15), (8, 3, 7, 7), (2, 2), (3, 3), (1, 1), 1, True),
        ("asym", (2, 4, 8, 7), (4, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2, True),
        ("dwx2s2", (1, 3, 8, 8), (6, 1, 3, 3), (2, 2), (1, 1), (1, 1), 3, False),
    ]
    for name, xs, ws, s, p, d, g, has_b in cases:
        x, w = randn(*xs), randn(*ws, scale=0.5)
        b = randn(ws[0]) if has_b else None
        (y,), (dx, dw, db), dy = run(lambda x, w, b: F.conv2d(x, w, b, s, p, d, g), [x, w, b])
        t = {"x": x, "w": w, "y": y, "dy": dy, "dx": dx, "dw": dw}
        if has_b:
            t.update(b=b, db=db)
        fam.add({"name": name, "op": "conv2d", "stride": list(s), "pad": list(p), "dilation": list(d),
                 "groups": g, "bias": has_b}, t)
    return fam


def norm_family():
    fam = Family("norm")
    for name, xs, momentum, eps in [("bn2d", (4, 3, 5, 4), 0.1, 1e-5), ("bn1d", (8, 5), 0.2, 1e-3),
                                    ("bn2d_b1", (1, 4, 6, 5), 0.1, 1e-5)]:
        C = xs[1]
        x, gamma, beta = f32(randn(*xs, scale=2.0) + 0.5), f32(randn(C) * 0.5 + 1.0), f32(randn(C) * 0.5)
        rm0, rv0 = f32(randn(C) * 0.1), f32(torch.rand(C, generator=gen).double() + 0.5)
        rm, rv = rm0.clone(), rv0.clone()

        def bn_train(x, g, b, rm=rm, rv=rv, momentum=momentum, eps=eps):
            return F.batch_norm(x, rm.clone().to(x.dtype), rv.clone().to(x.dtype), g, b, True, momentum, eps)

        (y,), (dx, dg, db), dy = run(bn_train, [x, gamma, beta])
        # running stats after one step, from the float64 run alone
        rm1, rv1 = rm0.clone(), rv0.clone()
        F.batch_norm(x, rm1, rv1, gamma, beta, True, momentum, eps)
        dims = [0] + list(range(2, len(xs)))
        mean = x.mean(dim=dims)
        invstd = 1.0 / torch.sqrt(x.var(dim=dims, unbiased=False) + eps)
        fam.add({"name": name, "op": "batchnorm_train", "eps": eps, "momentum": momentum},
                {"x": x, "gamma": gamma, "beta": beta, "running_mean": rm0, "running_var": rv0, "y": y,
                 "running_mean_after": rm1, "running_var_after": rv1, "save_mean": mean, "save_invstd": invstd,
                 "dy": dy, "dx": dx, "dgamma": dg, "dbeta": db})
        # eval mode with those updated running stats
        y_eval = F.batch_norm(x, rm1, rv1, gamma, beta, False, momentum, eps)
        fam.add({"name": name + "_eval", "op": "batchnorm_eval", "eps": eps},
                {"x": x, "gamma": gamma, "beta": beta, "running_mean": rm1, "running_var": rv1, "y": y_eval})
    for name, xs, eps in [("ln_nhwc", (2, 4, 5, 6), 1e-6), ("ln2d", (3, 7), 1e-5), ("ln_c96", (1, 2, 3, 96), 1e-6)]:
        C = xs[-1]
        x, gamma, beta = f32(randn(*xs, scale=1.5) - 0.3), f32(randn(C) * 0.5 + 1.0), f32(randn(C) * 0.5)
        (y,), (dx, dg, db), dy = run(lambda x, g, b: F.layer_norm(x, (C,), g, b, eps), [x, gamma, beta])
        mean = x.mean(dim=-1)
        invstd = 1.0 / torch.sqrt(x.var(dim=-1, unbiased=False) + eps)
        fam.add({"name": name, "op": "layernorm", "eps": eps},
                {"x": x, "gamma": gamma, "beta": beta, "y": y, "save_mean": mean, "save_invstd": invstd, "dy": dy,
                 "dx": dx, "dgamma": dg, "dbeta": db})
    return fam


def eltwise_family():
    fam = Family("eltwise")
    x = randn(3, 4, 5, 2, scale=3.0)
    (y,), (dx,), dy = run(lambda x: F.gelu(x), [x])
    fam.add({"name": "gelu", "op": "gelu"}, {"x": x, "y": y, "dy": dy, "dx": dx})
    x = randn(2, 3, 4, 5)
    (y,), (dx,), dy = run(lambda x: F.relu(x), [x])
    fam.add({"name": "relu", "op": "relu"}, {"x": x, "y": y, "dy": dy, "dx": dx})
    x = randn(2, 3, 4, 5)
    (y,), (dx,), dy = run(lambda x: x.permute(0, 2, 3, 1).contiguous(), [x])
    fam.add({"name": "nchw_to_nhwc", "op": "nchw_to_nhwc"}, {"x": x, "y": y, "dy": dy, "dx": dx})
    return fam


def pool_family():
    fam = Family("pool")
    for name, xs, k, s, p in [("max_k2s2", (2, 3, 7, 5), 2, 2, 0), ("max_k3s2p1", (2, 3, 9, 8), 3, 2, 1),
                              ("max_k3s1p1", (1, 2, 6, 5), 3, 1, 1)]:
        x = randn(*xs)
        (y, idx), (dx,), dy = run(lambda x: F.max_pool2d(x, k, s, p, return_indices=True), [x])
        fam.add({"name": name, "op": "maxpool2d", "kernel": [k, k], "stride": [s, s], "pad": [p, p]},
                {"x": x, "y": y, "indices": idx, "dy": dy, "dx": dx})
    for name, xs, k, s, p, incl in [("avg_k2s2", (2, 3, 7, 5), (2, 2), (2, 2), (0, 0), True),
                                    ("avg_k3s2p1", (2, 3, 9, 8), (3, 3), (2, 2), (1, 1), True),
                                    ("avg_k3s2p1_excl", (2, 3, 9, 8), (3, 3), (2, 2), (1, 1), False),
                                    ("avg_k3x2s1p1", (1, 2, 6, 5), (3, 2), (1, 1), (1, 1), True)]:
        x = randn(*xs)
        (y,), (dx,), dy = run(lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=incl), [x])
        fam.add({"name": name, "op": "avgpool2d", "kernel": list(k), "stride": list(s), "pad": list(p),
                 "count_include_pad": incl}, {"x": x, "y": y, "dy": dy, "dx": dx})
    x = randn(3, 4, 5, 3)
    (y,), (dx,), dy = run(lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1), [x])
    fam.add({"name": "gap", "op": "global_avgpool"}, {"x": x, "y": y, "dy": dy, "dx": dx})
    return fam


def linear_loss_family():
    fam = Family("linear_loss")
    for name, xs, out in [("fc_5x7_4", (5, 7), 4), ("fc_2x3x16_10", (2, 3, 16), 10), ("fc_16x128_10", (16, 128), 10)]:
        x, w, b = randn(*xs), randn(out, xs[-1], scale=0.3), randn(out)
        (y,), (dx, dw, db), dy = run(lambda x, w, b: F.linear(x, w, b), [x, w, b])
        fam.add({"name": name, "op": "linear"}, {"x": x, "w": w, "b": b, "y": y, "dy": dy, "dx": dx, "dw": dw,
                                                 "db": db})
    for name, n, k, eps, scale in [("xent_eps0", 6, 10, 0.0, 2.0), ("xent_eps0.1", 6, 10, 0.1, 2.0),
                                   ("xent_bin_eps0.1", 4, 2, 0.1, 4.0), ("xent_eps0.1_big", 32, 10, 0.1, 8.0)]:
        z = randn(n, k, scale=scale)
        labels = torch.randint(0, k, (n,), generator=gen)
        losses = {}
        for dt in (torch.float64, torch.float32):
            zz = z.detach().clone().to(dt).requires_grad_(True)
            loss = F.cross_entropy(zz, labels, label_smoothing=eps)
            loss.backward()
            losses[dt] = (loss.detach(), zz.grad)
        (l64, g64), (l32, g32) = losses[torch.float64], losses[torch.float32]
        assert abs(l64 - l32) <= ATOL + RTOL * abs(l64)
        assert ((g64 - g32.double()).abs() <= ATOL + RTOL * g64.abs()).all()
        fam.add({"name": name, "op": "softmax_xent", "label_smoothing": eps},
                {"logits": z, "labels": labels, "loss": l64.reshape(1), "dlogits": g64})
    return fam


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ref")))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    total = 0
    for fam in (conv_family(), norm_family(), eltwise_family(), pool_family(), linear_loss_family()):
        total += fam.write(args.out)
    print(f"total {total} bytes")
    if total > 300 * 1024:
        raise SystemExit("fixtures over 300 KB: shrink the cases")


if __name__ == "__main__":
    main()
