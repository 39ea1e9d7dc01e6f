#!/usr/bin/env python3
"""bench/preprocess: images per second for decode + resize to S + per-channel
statistics over the same JPEGs, imops against its peers, in one run:

  - imops preprocess (2 threads, and 1 thread), cache rebuilt each time (--force)
  - PIL + NumPy, one process (the plain way) and a 2-process Pool (its best here)
  - torchvision ImageFolder + DataLoader (the seed's way): num_workers=0 (default)
    and num_workers=2 (its best here), Resize((S,S)) + ToTensor, sums per batch
  - libjpeg-turbo bare decode (no resize, no statistics): full size on 1 and 2
    threads, and at DCT scale 1/2 on 2 threads - the ceiling

Each figure is the median of --reps runs (min-max beside it); the page cache is
warmed first. The ratio column is imops (2 threads) over the row.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image


def files_of(data):
    return sorted(str(p) for p in Path(data).glob("*/*.jpg"))


def pil_stats(paths, size):
    s = np.zeros(3)
    q = np.zeros(3)
    for p in paths:
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float64)
        a = a.reshape(-1, 3)
        s += a.sum(0)
        q += (a * a).sum(0)
    return s, q


def run_pil(paths, size, procs):
    if procs == 1:
        pil_stats(paths, size)
        return
    chunks = [paths[i::procs] for i in range(procs)]
    with Pool(procs) as pool:
        pool.starmap(pil_stats, [(c, size) for c in chunks])


def run_torchvision(data, size, workers):
    import torch
    from torchvision import datasets, transforms
    torch.set_num_threads(2)

    class Folder(datasets.ImageFolder):
        # torchvision takes every sub-folder for a class, hidden ones too: skip imops' .imops/
        def find_classes(self, directory):
            classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
            return classes, {c: i for i, c in enumerate(classes)}

    ds = Folder(data, transform=transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()]))
    dl = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=workers, shuffle=False)
    s = torch.zeros(3, dtype=torch.float64)
    q = torch.zeros(3, dtype=torch.float64)
    for x, _ in dl:
        x = x.double()
        s += x.sum(dim=(0, 2, 3))
        q += (x * x).sum(dim=(0, 2, 3))
    return len(ds)


def timed(fn, n, reps):
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imops", default="build/imops")
    ap.add_argument("--bare", default="build/bench_bare_decode")
    ap.add_argument("--data", default=".bench/surface-2000")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true", help="skip the torchvision rows")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    if len(files_of(a.data)) != a.count:
        subprocess.run([a.imops, "datagen", "surface", "--out", a.data, "--count", str(a.count), "--size", "227",
                        "--seed", "42"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paths = files_of(a.data)
    n = len(paths)
    for p in paths:  # warm the page cache
        Path(p).read_bytes()
    print(f"bench/preprocess: {n} JPEGs of 227x227 -> {a.size}x{a.size} + mean/std, "
          f"median of {a.reps} runs (min-max), {os.cpu_count()} CPUs", flush=True)

    rows = []

    def imops_run(threads):
        subprocess.run([a.imops, "preprocess", "--data", a.data, "--img-size", str(a.size), "--force",
                        "--threads", str(threads)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def bare(threads, denom):
        rates = []
        for _ in range(a.reps):
            out = subprocess.run([a.bare, str(threads), str(denom), *paths], check=True, capture_output=True, text=True)
            rates.append(float(out.stdout))
        return rates

    rows.append(("imops preprocess, 2 threads", timed(lambda: imops_run(2), n, a.reps)))
    rows.append(("imops preprocess, 1 thread", timed(lambda: imops_run(1), n, a.reps)))
    rows.append(("PIL+NumPy, 1 process (default)", timed(lambda: run_pil(paths, a.size, 1), n, a.reps)))
    rows.append(("PIL+NumPy, 2 processes (best)", timed(lambda: run_pil(paths, a.size, 2), n, a.reps)))
    if not a.no_torch:
        try:
            import torchvision  # noqa: F401
            rows.append(("torchvision DataLoader, 0 workers (default)",
                         timed(lambda: run_torchvision(a.data, a.size, 0), n, max(3, a.reps // 2))))
            rows.append(("torchvision DataLoader, 2 workers (best)",
                         timed(lambda: run_torchvision(a.data, a.size, 2), n, max(3, a.reps // 2))))
        except ImportError:
            print("torchvision not installed: its rows are skipped (IMOPS_BENCH_DEPS=1 make deps)")
    rows.append(("libjpeg-turbo bare decode 227, 1 thread", bare(1, 1)))
    rows.append(("libjpeg-turbo bare decode 227, 2 threads", bare(2, 1)))
    rows.append(("libjpeg-turbo bare decode DCT 1/2, 2 threads", bare(2, 2)))

    ours = statistics.median(rows[0][1])
    print(f"{'pipeline':46s} {'img/s':>9s} {'(min-max)':>17s} {'imops/row':>10s}")
    results = []
    for name, rates in rows:
        med = statistics.median(rates)
        print(f"{name:46s} {med:9.0f} ({min(rates):7.0f}-{max(rates):7.0f}) {ours / med:9.2f}x")
        results.append({"name": name, "median": med, "min": min(rates), "max": max(rates), "ratio": ours / med})
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
