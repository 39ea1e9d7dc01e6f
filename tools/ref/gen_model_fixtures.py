#!/usr/bin/python3
"""PyTorch reference fixtures for the model-level parity test (tests/unit/test_nn_parity.c).

Writes tests/ref/model_<arch>.safetensors for surfacenet, resnet18 (torchvision)
and convnext-atto (torchvision's ConvNeXt with the atto block setting). No
weights are stored: both sides fill every state_dict entry with the same
deterministic formula (formula_state below, reimplemented in the C test),
bit for bit, so the files stay small even for resnet18.

For each model ("fwd" case; resnet18 also "fwd_small" at 36x36 for sanitizer builds): an input batch (float32 values) and labels; the
eval-mode logits with the formula running stats; then one training-mode
forward: logits, the label-smoothed cross-entropy loss, the gradients of
every parameter (all of them for surfacenet; for the big models a strided
sample of at most 256 elements of each, "gs.<name>", plus the full gradient of
a few named ones), and the BN running stats after the update. These come
from the model run in float64 on the float32 inputs and are rounded to
float32 (torch's function rather than torch's float32 rounding); as a sanity
check the float32 run must agree with them within the C test's tolerance.

Optimizer cases (surfacenet at width 0.5, batch 4 at 32x32): several
training steps (zero_grad, forward, loss, backward, optional clip_grad_norm_,
step) with SGD (momentum, weight decay; Nesterov with clipping), Adam (L2
weight decay) and AdamW (decoupled decay, with and without the no-decay group
for norms and biases), in float64; stored: the loss of each step and the final
state_dict.

Metadata: format "imops-ref-fixture", version "1", torch and torchvision
versions, and "cases" (JSON). Run with Debian's torch:

    /usr/bin/python3 tools/ref/gen_model_fixtures.py [--out tests/ref]

The PyTorch module for imops' surfacenet is SurfaceNet below: a model.safetensors
written by imops loads into it (and into torchvision's resnet18 / ConvNeXt)
with load_state_dict(strict=True).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_write  # noqa: E402

FORMAT, VERSION = "imops-ref-fixture", "1"
ATOL, RTOL = 1e-4, 1e-3  # the C test's tolerance: |a - b| <= ATOL + RTOL * |ref|
SAMPLE_MAX = 256
M64 = (1 << 64) - 1


class SurfaceNet(nn.Module):
    """imops' surfacenet (SurfaceCNN of the performance anchors; smallcnn with stem_stride=1)."""

    def __init__(self, num_classes=2, in_channels=3, width=1.0, stem_stride=2, dropout=0.0):
        super().__init__()
        c1, c2, c3 = (max(1, int(math.floor(b * width + 0.5))) for b in (32, 64, 128))
        self.conv1 = nn.Conv2d(in_channels, c1, 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.relu(self.bn2(self.conv2(x))))
        x = self.relu(self.bn3(self.conv3(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


def convnext_atto(num_classes=2):
    setting = [CNBlockConfig(40, 80, 2), CNBlockConfig(80, 160, 2), CNBlockConfig(160, 320, 6),
               CNBlockConfig(320, None, 2)]
    return ConvNeXt(setting, stochastic_depth_prob=0.0, layer_scale=1e-6, num_classes=num_classes)


# ---- the deterministic weights (mirrored in tests/unit/test_nn_parity.c) ----

def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def unit_values(name, n):
    """n values in [-1, 1), exactly representable in float32, from a splitmix64 hash of (name, index)."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(name)) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    k = (z >> np.uint64(40)).astype(np.float64)  # 24 bits
    return (k - 8388608.0) / 8388608.0


def formula_value(name, shape):
    """float32 array: the value every state entry gets in the parity tests."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = unit_values(name, n)
    if name.endswith("num_batches_tracked"):
        v = np.zeros(n)
    elif name.endswith("running_mean"):
        v = 0.1 * u
    elif name.endswith("running_var"):
        v = 1.0 + 0.5 * u
    elif name.endswith("layer_scale"):
        v = 0.5 + 0.25 * u
    elif len(shape) >= 2:
        fan_in = n // shape[0]
        v = math.sqrt(6.0 / fan_in) * u
    elif name.endswith(".weight"):
        v = 1.0 + 0.2 * u
    else:
        v = 0.1 * u
    return v.astype(np.float32).reshape(shape)


def formula_state(model):
    sd = {}
    for k, t in model.state_dict().items():
        sd[k] = torch.from_numpy(formula_value(k, tuple(t.shape))).to(t.dtype)
    model.load_state_dict(sd, strict=True)
    return model


# ---- fixture files ----

class Fixture:
    def __init__(self, name):
        self.name, self.cases, self.tensors = name, [], []

    def add(self, case, role, t):
        a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        elif a.dtype == np.int64:
            a = a.astype(np.int32)
        self.tensors.append((f"{case}.{role}", a))

    def write(self, out):
        meta = {"format": FORMAT, "version": VERSION, "torch": torch.__version__,
                "torchvision": torchvision.__version__, "generator": "tools/ref/gen_model_fixtures.py",
                "cases": json.dumps(self.cases)}
        path = os.path.join(out, f"model_{self.name}.safetensors")
        n = st_write.write(path, self.tensors, meta)
        print(f"{path}: {len(self.cases)} cases, {len(self.tensors)} tensors, {n} bytes")
        return n


def sample(t):
    f = t.detach().reshape(-1)
    step = max(1, f.numel() // SAMPLE_MAX)
    return f[::step][:SAMPLE_MAX]


def max_ratio(a, ref):
    a, ref = a.double(), ref.double()
    return float(((a - ref).abs() / (ATOL + RTOL * ref.abs())).max())


def run_fwd_bwd(model, x, y, smoothing):
    """Eval logits (fresh running stats), then one training forward/backward."""
    model.eval()
    with torch.no_grad():
        logits_eval = model(x)
    model.train()
    model.zero_grad()
    logits = model(x)
    loss = nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, y)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return logits_eval, logits, loss.detach(), grads, state


def fwd_case(fx, arch, make, opts, batch, h, w, smoothing, full_grads, seed, case="fwd"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, opts.get("in_channels", 3), h, w, generator=gen).float()
    y = torch.randint(0, opts.get("num_classes", 2), (batch,), generator=gen)
    res = {}
    for dt in (torch.float64, torch.float32):
        model = formula_state(make()).to(dt)
        res[dt] = run_fwd_bwd(model, x.to(dt), y, smoothing)
    r64, r32 = res[torch.float64], res[torch.float32]
    worst = max(max_ratio(r32[1], r64[1]), max_ratio(r32[0], r64[0]), max_ratio(r32[2], r64[2]),
                max(max_ratio(r32[3][k], r64[3][k]) for k in r64[3]))
    print(f"  {arch} {case} ({batch}x{h}x{w}): loss {float(r64[2]):.6f}; torch float32 vs float64 worst ratio {worst:.3f}")
    if worst > 1.0:
        raise SystemExit(f"{arch}: torch's own float32 run misses the tolerance; loosen it or change the case")
    logits_eval, logits, loss, grads, state = r64
    fx.add(case, "x", x)
    fx.add(case, "labels", y)
    fx.add(case, "logits_eval", logits_eval)
    fx.add(case, "logits", logits)
    fx.add(case, "loss", loss.reshape(1))
    for k, g in grads.items():
        if full_grads == "all" or k in full_grads:
            fx.add(case, f"grad.{k}", g)
        if full_grads != "all":
            fx.add(case, f"gs.{k}", sample(g))
    for k, v in state.items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            fx.add(case, f"state.{k}", v)
    fx.cases.append({"name": case, "arch": arch, "opts": opts, "batch": batch, "h": h, "w": w,
                     "label_smoothing": smoothing, "sample_max": SAMPLE_MAX,
                     "full_grads": full_grads if full_grads == "all" else sorted(full_grads)})


def make_optimizer(kind, model, cfg):
    if cfg.get("decay_filter"):
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.endswith("layer_scale")]
        no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.endswith("layer_scale"))]
        params = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        params = model.parameters()
    wd = cfg["weight_decay"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], dampening=cfg.get("dampening", 0),
                               nesterov=bool(cfg.get("nesterov")), weight_decay=wd)
    if kind == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                                weight_decay=wd, amsgrad=bool(cfg.get("amsgrad")))
    return torch.optim.AdamW(params, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                             weight_decay=wd, amsgrad=bool(cfg.get("amsgrad")))


def optim_case(fx, name, opts, cfg, steps, clip, smoothing, seed):
    gen = torch.Generator().manual_seed(seed)
    batch, h, w = 4, 32, 32
    x = torch.randn(batch, 3, h, w, generator=gen).float()
    y = torch.randint(0, opts["num_classes"], (batch,), generator=gen)
    model = formula_state(SurfaceNet(num_classes=opts["num_classes"], width=opts["width"])).double()
    opt = make_optimizer(cfg["kind"], model, cfg)
    losses = []
    for _ in range(steps):
        model.train()
        opt.zero_grad()
        loss = nn.CrossEntropyLoss(label_smoothing=smoothing)(model(x.double()), y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(float(loss))
    fx.add(name, "x", x)
    fx.add(name, "labels", y)
    fx.add(name, "losses", np.array(losses, dtype=np.float32))
    for k, v in model.state_dict().items():
        fx.add(name, f"final.{k}", v.double() if v.is_floating_point() else v.float())
    fx.cases.append({"name": name, "arch": "surfacenet", "opts": opts, "batch": batch, "h": h, "w": w,
                     "optim": cfg, "steps": steps, "clip": clip, "label_smoothing": smoothing})
    print(f"  {name}: losses {['%.6f' % v for v in losses]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "ref"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    total = 0

    fx = Fixture("surfacenet")
    fwd_case(fx, "surfacenet", lambda: SurfaceNet(num_classes=2), {"num_classes": 2}, 2, 32, 32, 0.1, "all", 11)
    so = {"num_classes": 2, "width": 0.5}
    adam = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    optim_case(fx, "sgd", so, {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}, 3, 0.0, 0.0, 21)
    optim_case(fx, "sgd_nesterov_clip", so, {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": 1,
                                             "weight_decay": 1e-4}, 3, 0.5, 0.1, 22)
    optim_case(fx, "adam", so, dict(adam, kind="adam", lr=1e-3, weight_decay=1e-4), 3, 0.0, 0.0, 23)
    optim_case(fx, "adamw_filter", so, dict(adam, kind="adamw", lr=1e-3, weight_decay=0.05, decay_filter=1), 3,
               0.0, 0.1, 24)
    optim_case(fx, "adamw", so, dict(adam, kind="adamw", lr=2e-3, weight_decay=0.01), 1, 0.0, 0.0, 25)
    total += fx.write(args.out)

    fx = Fixture("resnet18")
    rn_full = {"conv1.weight", "layer2.0.downsample.0.weight", "layer3.1.bn2.weight", "fc.weight", "fc.bias"}
    fwd_case(fx, "resnet18", lambda: torchvision.models.resnet18(num_classes=2), {"num_classes": 2}, 2, 64, 64, 0.1,
             rn_full, 12)
    # The same at 36x36 (layer4 at 2x2): what sanitizer builds run, the ref kernels being slow at -O0.
    fwd_case(fx, "resnet18", lambda: torchvision.models.resnet18(num_classes=2), {"num_classes": 2}, 2, 36, 36, 0.1,
             {"fc.weight"}, 14, case="fwd_small")
    total += fx.write(args.out)

    fx = Fixture("convnext_atto")
    fwd_case(fx, "convnext-atto", lambda: convnext_atto(num_classes=2), {"num_classes": 2}, 2, 64, 64, 0.1,
             {"features.0.0.weight", "features.1.0.layer_scale", "features.3.0.block.0.weight",
              "features.5.2.block.2.weight", "classifier.0.weight", "classifier.2.weight"}, 13)
    total += fx.write(args.out)
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
