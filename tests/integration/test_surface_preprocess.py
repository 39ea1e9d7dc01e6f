"""datagen surface, then preprocess: the flagship's first pipeline stage, for real."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image


def test_datagen_then_preprocess(imops, tmp_path):
    data = tmp_path / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 300, "--size", 227, "--seed", 42)
    neg = sorted((data / "Negative").iterdir())
    pos = sorted((data / "Positive").iterdir())
    assert len(neg) == 150 and len(pos) == 150
    assert neg[0].name == "00001.jpg"
    with Image.open(pos[0]) as im:
        assert im.size == (227, 227) and im.mode == "RGB"
    assert (data / "contact-sheet.png").exists()

    p = imops.run("preprocess", "--data", data, "--img-size", 112)
    # the seed's report style
    assert "Surface | train | negative : 105" in p.stdout
    assert "Surface | test | positive : 22" in p.stdout or "Surface | test | positive : 23" in p.stdout

    ms = [float(x) for x in (data / "mean-std.txt").read_text().split()]
    assert len(ms) == 6
    split = json.loads((data / ".imops" / "split.json").read_text())
    assert split["seed"] == 42 and len(split["files"]) == 300
    ds = json.loads((data / ".imops" / "dataset.json").read_text())
    assert ds["classes"] == ["Negative", "Positive"]
    assert ds["img_size"] == 112 and ds["channels"] == 3

    # mean/std recomputed independently with PIL + numpy over the train split
    # (PIL's bilinear resize; imops matches it within one grey level)
    acc = np.zeros(3)
    acc2 = np.zeros(3)
    n = 0
    for f in split["files"]:
        if f["split"] != "train":
            continue
        with Image.open(data / f["file"]) as im:
            a = np.asarray(im.convert("RGB").resize((112, 112), Image.BILINEAR), dtype=np.float64) / 255
        acc += a.reshape(-1, 3).sum(0)
        acc2 += (a.reshape(-1, 3) ** 2).sum(0)
        n += 112 * 112
    mean = acc / n
    std = np.sqrt(acc2 / n - mean ** 2)
    assert np.allclose(ms[:3], mean, atol=2e-3), (ms, mean)
    assert np.allclose(ms[3:], std, atol=2e-3), (ms, std)

    # the cache holds exactly what the file list says
    cache = (data / ".imops" / "cache-112.bin").read_bytes()
    assert cache[:8] == b"IMOPSCAC"
    n_img = int.from_bytes(cache[16:24], "little")
    assert n_img == 300
    assert len(cache) >= 300 * 112 * 112 * 3

    # the second run reuses it
    r = imops.json("preprocess", "--data", data, "--img-size", 112)
    assert r["cache_reused"] is True
    assert r["counts"]["train"] == {"Negative": 105, "Positive": 105}


def test_bad_files_are_reported_not_fatal(imops, tmp_path):
    data = tmp_path / "surface"
    g = imops.json("datagen", "surface", "--out", data, "--count", 41, "--size", 64, "--seed", 1, "--no-sheet")
    assert (g["count"], g["negative"], g["positive"], g["contact_sheet"]) == (41, 21, 20, None)
    (data / "Negative" / "00021.jpg").unlink()
    good = (data / "Positive" / "00001.jpg").read_bytes()
    (data / "Positive" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (data / "Negative" / "empty.jpg").write_bytes(b"")
    (data / "Negative" / "fake.png").write_text("not an image")
    r = imops.run("preprocess", "--data", data, "--img-size", 32, "--json")
    out = json.loads(r.stdout)
    bad = {b["file"] for b in out["bad_files"]}
    assert bad == {"Positive/truncated.jpg", "Negative/empty.jpg", "Negative/fake.png"}
    assert out["total"] == 40
    assert "skipped 3 bad files" in r.stderr
    # nothing usable in one class: exit 1
    for f in (data / "Positive").iterdir():
        f.write_bytes(b"garbage")
    p = imops.run("preprocess", "--data", data, "--img-size", 32, check=False)
    assert p.returncode == 1
    assert "Positive" in p.stderr


def test_killed_preprocess_leaves_no_half_cache(imops, tmp_path):
    data = tmp_path / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 2000, "--size", 227, "--seed", 3)
    cache = data / ".imops" / "cache-224.bin"
    killed = False
    for delay in (0.3, 0.6, 1.0):
        proc = subprocess.Popen([imops.binary, "preprocess", "--data", str(data), "--img-size", "224", "--force"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed = True
        proc.wait(timeout=60)
        # whatever happened, no visible cache is half-written
        if cache.exists():
            head = cache.read_bytes()[:32]
            assert head[:8] == b"IMOPSCAC"
            n = int.from_bytes(head[16:24], "little")
            assert cache.stat().st_size >= n * 224 * 224 * 3
        if killed:
            break
    assert killed, "preprocess finished before it could be killed"
    leftovers = [p.name for p in (data / ".imops").iterdir() if ".tmp-" in p.name]
    # the next run cleans up after the killed one and builds a whole cache
    r = imops.json("preprocess", "--data", data, "--img-size", 224)
    assert r["total"] == 2000
    assert not [p.name for p in (data / ".imops").iterdir() if ".tmp-" in p.name], leftovers
