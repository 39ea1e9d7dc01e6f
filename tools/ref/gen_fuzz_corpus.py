#!/usr/bin/python3
"""Seed corpus for tests/fuzz/fuzz_safetensors.c: three tiny valid safetensors files.

    python3 tools/ref/gen_fuzz_corpus.py [--out tests/fuzz/corpus/safetensors]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_write  # noqa: E402


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "tests", "fuzz", "corpus",
                                                                     "safetensors")))
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    st_write.write(os.path.join(out, "empty.safetensors"), [])
    st_write.write(os.path.join(out, "f32_2x3_meta.safetensors"),
                   [("w", np.arange(6, dtype=np.float32).reshape(2, 3) / 4)], {"format": "pt", "k": "v"})
    st_write.write(os.path.join(out, "mixed.safetensors"), [
        ("conv.weight", np.linspace(-1, 1, 2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)),
        ("labels", np.array([0, 1, 1], dtype=np.int32)),
        ("mask", np.array([1, 0, 1, 1, 0], dtype=np.uint8)),
        ("scale", np.array(0.5, dtype=np.float32)),
        ("none", np.zeros((0, 4), dtype=np.float32)),
    ], {"note": "seed"})
    for f in sorted(os.listdir(out)):
        print(os.path.join(out, f), os.path.getsize(os.path.join(out, f)))


if __name__ == "__main__":
    main()
