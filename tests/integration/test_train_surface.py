"""imops train / test / predict on a generated surface set, end to end: training
reaches a good validation accuracy, the run is in the store with its metrics
and model, registry URIs resolve, kill -9 mid-epoch then --resume finishes
with the same weights as an uninterrupted run, and no checkpoint on disk is
ever damaged.

Accuracy: every positive carries a crack a person can see, and the
negatives' distractors (grooved joints near the image axes, short scratches,
stain edges, shadows) are straight or soft, so the labels are unambiguous,
like the real set's (99.9% for published CNNs). Here resnet18 at width 0.25
(about surfacenet's compute per image) reaches about 98% at 64x64 in 10
epochs; surfacenet, whose three 3x3 convs see 33 pixels at 112, gets about
97% at 112x112 in 4-6 epochs, too close to the bar for a test."""
import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def surface(imops, tmp_path_factory):
    """4000 images (2800 train) at 64x64 for the accuracy test."""
    root = tmp_path_factory.mktemp("surface")
    data = root / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 4000, "--size", 227, "--seed", 7, "--no-sheet")
    imops.run("preprocess", "--data", data, "--img-size", 64)
    return data


@pytest.fixture(scope="module")
def surface_small(imops, tmp_path_factory):
    """2000 images at 112x112: epochs long enough to kill one in the middle."""
    root = tmp_path_factory.mktemp("surface_small")
    data = root / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 2000, "--size", 227, "--seed", 3, "--no-sheet")
    imops.run("preprocess", "--data", data, "--img-size", 112)
    return data


def read_safetensors(path):
    """{name: bytes} of a safetensors file, checking its structure on the way."""
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    header.pop("__metadata__", None)
    data = b[8 + n:]
    ends = sorted(v["data_offsets"] for v in header.values())
    assert ends[0][0] == 0 and ends[-1][1] == len(data), f"{path}: the tensors do not tile the data"
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()}


def check_checkpoint_dir(d):
    """Every manifest in d names whole files: right size, parseable content."""
    d = Path(d)
    manifests = [m for m in (d / "manifest.json", d / "manifest-prev.json") if m.exists()]
    assert manifests, f"no manifest in {d}"
    for m in manifests:
        man = json.loads(m.read_text())
        assert man["format"] == "imops-checkpoint"
        for role, f in man["files"].items():
            p = d / f["file"]
            assert p.exists(), f"{m} names {p}, which is missing"
            assert p.stat().st_size == f["size"], f"{p} has the wrong size"
            if p.suffix == ".json":
                st = json.loads(p.read_text())
                assert st["format"] == "imops-trainer-state"
            else:
                assert read_safetensors(p)


EPOCHS = 10


def test_train_test_predict_track(imops, surface, tmp_path):
    env = {"IMOPS_HOME": str(tmp_path / "ws")}
    out = tmp_path / "out"
    r = imops.json("train", "--data", surface, "--model", "resnet18", "--width", 0.25, "--epochs", EPOCHS,
                   "--batch-size", 32, "--optimizer", "adam", "--lr", 0.003, "--weight-decay", 0, "--output", out,
                   "--experiment", "surface", "--run-name", "surf-r18", env=env, timeout=900)
    assert r["status"] == "FINISHED" and r["epochs_done"] == EPOCHS and r["n_train"] == 2800 and r["n_val"] == 600
    hist = r["history"]
    print("surface:", [(h["epoch"], round(h["val_accuracy"], 4), round(h["epoch_seconds"], 2),
                        round(h["images_per_second"])) for h in hist])
    assert r["best_val_accuracy"] >= 0.97
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(h["images_per_second"] > 0 for h in hist)
    for f in ("model.json", "model.safetensors", "MLmodel"):
        assert (out / "model" / f).exists()
    model_json = json.loads((out / "model" / "model.json").read_text())
    assert model_json["classes"] == ["Negative", "Positive"] and model_json["img_size"] == [64, 64]
    check_checkpoint_dir(out / "last")
    check_checkpoint_dir(out / "best")
    run_id = r["run_id"]
    assert r["model_uri"] == f"runs:/{run_id}/model"

    # The run in the store: status, params, per-epoch and per-step metrics, tags, artifacts.
    runs = json.loads(imops.run("runs", "list", "--experiment", "surface", "--json", env=env).stdout)["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["info"]["run_id"] == run_id and run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m for m in run["data"]["metrics"]}
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds",
              "images_per_second", "train_loss_step"):
        assert k in metrics, k
    assert metrics["val_accuracy"]["step"] == EPOCHS
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model"] == "resnet18" and params["optimizer"] == "adam" and params["epochs"] == str(EPOCHS)
    assert params["width"] == "0.25"
    assert params["batch_size"] == "32" and params["img_size"] == "64"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlflow.runName"] == "surf-r18" and tags["mlflow.source.name"] == "imops train"
    assert tags["imops.data_hash"] == r["data_hash"] and "mlflow.user" in tags
    art = Path(run["info"]["artifact_uri"].removeprefix("file://"))
    assert (art / "model" / "model.safetensors").read_bytes() == (out / "model" / "model.safetensors").read_bytes()
    assert (art / "plots" / "training_curves.svg").read_text().startswith("<svg")

    # imops test through runs:/ logs to the same run.
    t = imops.json("test", "--model", f"runs:/{run_id}/model", "--data", surface, env=env)
    assert t["n"] == 600 and t["split"] == "test" and t["run_id"] == run_id
    assert t["accuracy"] >= 0.95
    assert sum(map(sum, t["confusion_matrix"])) == 600
    assert 0.97 <= t["roc_auc"] <= 1.0
    assert set(t["per_class"]) == {"Negative", "Positive"}
    run = json.loads(imops.run("runs", "show", run_id, "--json", env=env).stdout)["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert abs(metrics["test_accuracy"] - t["accuracy"]) < 1e-9 and "test_f1_Positive" in metrics
    assert (art / "plots" / "confusion_matrix.svg").exists()
    text = imops.run("test", "--model", out / "model", "--data", surface, "--no-track", env=env).stdout
    assert "confusion matrix" in text and "precision" in text

    # imops predict: the labels of files mostly match their folders.
    files = sorted((surface / "Positive").iterdir())[:10] + sorted((surface / "Negative").iterdir())[:10]
    p = imops.json("predict", "--model", f"runs:/{run_id}/model", *files, env=env)
    preds = p["predictions"]
    assert len(preds) == 20
    right = sum(pr["label"] == Path(pr["file"]).parent.name for pr in preds)
    assert right >= 18, preds
    for pr in preds:
        assert abs(sum(pr["probabilities"].values()) - 1) < 1e-4
        assert pr["label"] == ["Negative", "Positive"][pr["class"]]
    bad = imops.run("predict", "--model", out / "model", tmp_path / "nope.jpg", check=False, env=env)
    assert bad.returncode == 1 and "nope.jpg" in bad.stderr
    # Many files go in batches of up to 64, decoded side by side: every file answered in order, a
    # corrupt and a missing one in the middle answered with their errors, the same logits as
    # before (up to rounding), exit status 1.
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    many = files * 3 + [corrupt] + files * 2 + [tmp_path / "nope.jpg"] + files
    m = imops.run("predict", "--model", out / "model", "--json", *many, check=False, env=env)
    assert m.returncode == 1, m.stderr
    got = json.loads(m.stdout)["predictions"]
    assert [Path(g["file"]) for g in got] == [Path(f) for f in many]
    want = {pr["file"]: pr["logits"] for pr in preds}
    for f, g in zip(many, got):
        if f in (corrupt, tmp_path / "nope.jpg"):
            assert "logits" not in g and g["error"], g
            continue
        w = want[str(f)]
        assert all(abs(a - b) <= 1e-4 * (1 + abs(b)) for a, b in zip(g["logits"], w)), (f, g["logits"], w)
    assert "corrupt.jpg" not in json.dumps([g for g in got if "error" not in g])

    # The registry: register the run's model, evaluate through models:/ URIs.
    imops.run("models", "register", run_id, "surface", env=env)
    imops.run("models", "alias", "surface", "champion", "1", env=env)
    t1 = imops.json("test", "--model", "models:/surface/1", "--data", surface, env=env)
    t2 = imops.json("test", "--model", "models:/surface@champion", "--data", surface, "--no-track", env=env)
    assert t1["accuracy"] == t2["accuracy"] == t["accuracy"] and t1["run_id"] == run_id

    # Clear errors: a GPU device, a remote tracking server, an unknown model URI.
    g = imops.run("train", "--data", surface, "--device", "0", "--no-track", check=False, env=env)
    assert g.returncode == 1 and "GPU" in g.stderr and len(g.stderr.strip().splitlines()) == 1
    g = imops.run("train", "--data", surface, "--tracking-uri", "http://127.0.0.1:5999", check=False, env=env)
    assert g.returncode == 1 and "127.0.0.1:5999" in g.stderr  # nothing listens there
    g = imops.run("test", "--model", "models:/nope/1", "--data", surface, check=False, env=env)
    assert g.returncode == 1
    g = imops.run("train", "--resume", out, "--lr", 0.1, check=False, env=env)
    assert g.returncode == 2 and "--lr" in g.stderr


def start_train(imops_bin, args, env):
    full = dict(os.environ)
    full.update(env)
    return subprocess.Popen([imops_bin, "train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full)


def wait_mid_epoch(out, proc, min_step, timeout=300):
    """Waits until out/last holds a checkpoint in the middle of an epoch at or past min_step."""
    man = out / "last" / "manifest.json"
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "training ended before it could be stopped"
        try:
            m = json.loads(man.read_text())
            if m["global_step"] >= min_step and m["batch"] > 0:
                return m
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    raise AssertionError("no mid-epoch checkpoint appeared")


def test_kill9_then_resume(imops, imops_bin, surface_small, tmp_path):
    env = {"IMOPS_HOME": str(tmp_path / "ws")}
    # Dropout on: the checkpoint carries the model's random stream, so the masks after the resume are the same.
    common = ["--data", surface_small, "--model", "surfacenet", "--epochs", 2, "--batch-size", 16, "--lr", 0.02,
              "--dropout", 0.3, "--checkpoint-every", 3, "--final", "last"]
    # The reference: an uninterrupted run.
    ref = imops.json("train", *common, "--output", tmp_path / "ref", "--no-track", env=env, timeout=900)
    assert ref["epochs_done"] == 2

    out = tmp_path / "out"
    proc = start_train(imops.binary, [*common, "--output", out, "--run-name", "killed"], env)
    m = wait_mid_epoch(out, proc, 20)
    time.sleep(0.05)  # land somewhere in the next steps, maybe in the middle of a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    check_checkpoint_dir(out / "last")
    if (out / "best").exists():
        check_checkpoint_dir(out / "best")
    assert not (out / "model").exists()

    r = imops.json("train", "--resume", out, env=env, timeout=900)
    assert r["status"] == "FINISHED" and r["resumed"] and r["epochs_done"] == 2 and len(r["history"]) == 2
    check_checkpoint_dir(out / "last")
    # Bit for bit the uninterrupted run's weights.
    a = read_safetensors(tmp_path / "ref" / "model" / "model.safetensors")
    b = read_safetensors(out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    run = json.loads(imops.run("runs", "show", r["run_id"], "--json", env=env).stdout)["run"]
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "killed"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert int(tags["imops.resumed_at_step"]) >= m["global_step"]


def test_sigterm_checkpoints_and_marks_killed(imops, imops_bin, surface_small, tmp_path):
    env = {"IMOPS_HOME": str(tmp_path / "ws")}
    out = tmp_path / "out"
    proc = start_train(imops.binary, ["--data", surface_small, "--epochs", 2, "--batch-size", 16,
                                      "--checkpoint-every", 4, "--output", out, "--json"], env)
    wait_mid_epoch(out, proc, 8)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert "--resume" in stderr
    res = json.loads(stdout)
    assert res["status"] == "KILLED"
    man = json.loads((out / "last" / "manifest.json").read_text())
    assert man["global_step"] == res["global_step"]  # the checkpoint is at the exact stopping step
    check_checkpoint_dir(out / "last")
    run = json.loads(imops.run("runs", "show", res["run_id"], "--json", env=env).stdout)["run"]
    assert run["info"]["status"] == "KILLED"
    r = imops.json("train", "--resume", out / "last", env=env, timeout=900)
    assert r["status"] == "FINISHED" and r["run_id"] == res["run_id"]
    run = json.loads(imops.run("runs", "show", res["run_id"], "--json", env=env).stdout)["run"]
    assert run["info"]["status"] == "FINISHED"
