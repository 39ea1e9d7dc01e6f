"""imops export onnx against its peers: for surfacenet, resnet18 and
convnext-atto (each briefly trained on a small generated surface set at 112x112)
the exported file passes onnx.checker's full check (with shape inference),
runs in ONNX Runtime on the real images of the test split, and gives the
logits and classes that `imops predict --json` gives for the same files (also
with the normalization folded in, --with-preprocess, on raw 0-255 pixels), and
for one image alone (imops' batch-1 kernels: at this size its own Winograd F(4x4)
serves the 28x28 layers of resnet18 and surfacenet, its F(2x2) resnet18's 7x7 and 4x4 stages).
The bundle's safetensors load into torchvision's resnet18(num_classes=2) and
give the same logits. A tracked export (runs:/ URI) logs model/model.onnx to
the run and adds MLflow's onnx flavor to its MLmodel. Bad input (unknown
architecture, corrupt bundle, bad options) fails with a clear message, and an
existing output file is replaced whole."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from PIL import Image  # noqa: E402

SIZE = 112  # resnet18's first stage and surfacenet's second layer at 28x28: imops' own Winograd at batch 1
ARCHS = ["surfacenet", "resnet18", "convnext-atto"]
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def work(tmp_path_factory, imops):
    root = tmp_path_factory.mktemp("onnx")
    env = {"IMOPS_HOME": str(root / "ws")}
    data = root / "data"
    imops.run("datagen", "surface", "--out", data, "--count", 60, "--size", SIZE, "--seed", 7, "--no-sheet", env=env)
    imops.run("preprocess", "--data", data, "--img-size", SIZE, env=env)
    runs = {}
    for arch in ARCHS:
        r = imops.json("train", "--data", data, "--model", arch, "--epochs", 1, "--batch-size", 16, "--lr", 0.01,
                       "--output", root / f"out-{arch}", env=env, timeout=900)
        assert r["status"] == "FINISHED"
        runs[arch] = r["run_id"]
    split = json.loads((data / ".imops" / "split.json").read_text())
    test_files = [str(data / f["file"]) for f in split["files"] if f["split"] == "test"]
    assert len(test_files) >= 6
    return {"root": root, "env": env, "data": data, "runs": runs, "files": test_files}


def bundle(work, arch):
    return work["root"] / f"out-{arch}" / "model"


def pixels(files):
    """The test images as N x 3 x H x W float32 0..255 (same size as the model: no resize)."""
    arr = [np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in files]
    assert all(a.shape == (SIZE, SIZE, 3) for a in arr)
    return np.stack(arr).transpose(0, 3, 1, 2).astype(np.float32)


def normalize(x, meta):
    """imops' loader arithmetic: x * 1/(255 std) + (-mean/std), in float32."""
    mean = np.asarray(meta["mean"], np.float32)
    std = np.asarray(meta["std"], np.float32)
    scale = np.float32(1.0) / (np.float32(255.0) * std)
    shift = -mean / std
    return (x * scale[None, :, None, None] + shift[None, :, None, None]).astype(np.float32)


def imops_logits(imops, model, files, env):
    p = imops.json("predict", "--model", model, *files, env=env)
    preds = p["predictions"]
    assert [q["file"] for q in preds] == list(files)
    return np.asarray([q["logits"] for q in preds], np.float64), np.asarray([q["class"] for q in preds])


def assert_close(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want)
    ok = diff <= ATOL + RTOL * np.abs(want)
    assert ok.all(), f"{what}: max |diff| {diff.max():.3g}, relative {np.max(diff / (np.abs(want) + 1e-12)):.3g}"


@pytest.mark.parametrize("arch", ARCHS)
def test_export_matches_predict(work, imops, arch, tmp_path):
    env, files = work["env"], work["files"]
    meta = json.loads((bundle(work, arch) / "model.json").read_text())
    want, classes = imops_logits(imops, bundle(work, arch), files, env)
    raw = pixels(files)
    for pre in (False, True):
        out = tmp_path / f"{arch}{'-pre' if pre else ''}.onnx"
        args = ["export", "onnx", bundle(work, arch), out, "--probabilities"] + (["--with-preprocess"] if pre else [])
        r = imops.json(*args, env=env)
        assert r["arch"] == arch and r["opset"] == 17 and r["bytes"] == out.stat().st_size and not r["tracked"]
        model = onnx.load(str(out))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == 17 and model.producer_name == "imops"
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props["classes"]) == ["Negative", "Positive"]
        assert json.loads(props["img_size"]) == [SIZE, SIZE] and props["arch"] == arch
        assert np.allclose(json.loads(props["mean"]), meta["mean"]) and np.allclose(json.loads(props["std"]), meta["std"])
        assert props["imops_version"] and props["preprocess"] == ("normalize" if pre else "none")
        # dynamic batch: "N"
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
        ops = {n.op_type for n in model.graph.node}
        assert "BatchNormalization" not in ops  # folded into the convolutions
        sess_opts = ort.SessionOptions()
        sess_opts.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(out), sess_opts, providers=["CPUExecutionProvider"])
        assert [o.name for o in sess.get_outputs()] == ["logits", "probabilities"]
        x = raw if pre else normalize(raw, meta)
        logits, probs = sess.run(None, {"image": x})
        assert_close(logits, want, f"{arch} ORT vs imops predict (with_preprocess={pre})")
        assert (logits.argmax(1) == classes).all()
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5) and (probs.argmax(1) == classes).all()
        # one image at a time gives the same (batch independence), in ORT and in imops
        one, _ = sess.run(None, {"image": x[:1]})
        assert_close(one[0], want[0], f"{arch} batch of one")
        if not pre:
            mine, _ = imops_logits(imops, bundle(work, arch), files[:1], env)
            assert_close(one[0], mine[0], f"{arch} ORT vs imops predict, one image")


def test_torchvision_resnet18(work, imops):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from test_nn_torch import read_safetensors
    d = bundle(work, "resnet18")
    meta = json.loads((d / "model.json").read_text())
    sd = {k: torch.from_numpy(v) for k, v in read_safetensors(d / "model.safetensors").items()}
    model = torchvision.models.resnet18(num_classes=2)
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = normalize(pixels(work["files"]), meta)
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    want, classes = imops_logits(imops, d, work["files"], work["env"])
    assert_close(got, want, "torchvision resnet18 vs imops predict")
    assert (got.argmax(1) == classes).all()


def test_tracked_export(work, imops, tmp_path):
    yaml = pytest.importorskip("yaml")
    env, run_id = work["env"], work["runs"]["surfacenet"]
    out = tmp_path / "tracked.onnx"
    r = imops.json("export", "onnx", f"runs:/{run_id}/model", out, "--with-preprocess", env=env)
    assert r["tracked"] and r["run_id"] == run_id and r["artifact"] == "model/model.onnx"
    arts = list((work["root"] / "ws").glob(f"artifacts/*/{run_id}/artifacts/model"))
    assert len(arts) == 1, arts
    art = arts[0]
    assert (art / "model.onnx").read_bytes() == out.read_bytes()
    ml = yaml.safe_load((art / "MLmodel").read_text())
    fl = ml["flavors"]["onnx"]
    assert fl["data"] == "model.onnx" and fl["onnx_version"] and fl["providers"] == ["CPUExecutionProvider"]
    assert fl["opset"] == 17 and fl["preprocess"] == "normalize"
    assert ml["flavors"]["imops"]["data"] == "model.json" and ml["run_id"] == run_id
    # exporting again replaces the flavor (not a second copy) and keeps the rest
    before = (art / "MLmodel").read_text()
    imops.json("export", "onnx", f"runs:/{run_id}/model", out, env=env)
    after = (art / "MLmodel").read_text()
    assert after.count("  onnx:") == 1 and "preprocess: none" in after
    assert before.replace("preprocess: normalize", "preprocess: none") == after
    mlflow_models = pytest.importorskip("mlflow.models")
    m = mlflow_models.Model.load(str(art / "MLmodel"))
    assert m.flavors["onnx"]["data"] == "model.onnx" and "imops" in m.flavors
    # the artifact is listed by the run's artifact listing
    ls = imops.run("runs", "artifacts", run_id, "--path", "model", env=env, check=False)
    if ls.returncode == 0:
        assert "model.onnx" in ls.stdout
    # --no-track leaves the run alone
    (art / "model.onnx").unlink()
    r = imops.json("export", "onnx", f"runs:/{run_id}/model", out, "--no-track", env=env)
    assert not r["tracked"] and not (art / "model.onnx").exists()


def test_bad_input(work, imops, tmp_path):
    env = work["env"]
    src = bundle(work, "surfacenet")
    # unknown architecture
    bad = tmp_path / "badarch"
    bad.mkdir()
    for f in ("MLmodel", "model.safetensors"):
        (bad / f).write_bytes((src / f).read_bytes())
    meta = json.loads((src / "model.json").read_text())
    meta["arch"] = "vgg99"
    (bad / "model.json").write_text(json.dumps(meta))
    p = imops.run("export", "onnx", bad, tmp_path / "x.onnx", check=False, env=env)
    assert p.returncode == 1 and "unknown architecture 'vgg99'" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
    # corrupt weights
    cor = tmp_path / "corrupt"
    cor.mkdir()
    for f in ("MLmodel", "model.json"):
        (cor / f).write_bytes((src / f).read_bytes())
    w = (src / "model.safetensors").read_bytes()
    (cor / "model.safetensors").write_bytes(w[: len(w) // 2])
    p = imops.run("export", "onnx", cor, tmp_path / "x.onnx", check=False, env=env)
    assert p.returncode == 1 and "model.safetensors" in p.stderr, p.stderr
    (cor / "model.json").write_text("{not json")
    p = imops.run("export", "onnx", cor, tmp_path / "x.onnx", check=False, env=env)
    assert p.returncode == 1 and "model.json" in p.stderr, p.stderr
    # not a bundle / missing model
    p = imops.run("export", "onnx", tmp_path / "nope", tmp_path / "x.onnx", check=False, env=env)
    assert p.returncode == 1 and p.stderr.startswith("imops export onnx:")
    # usage errors
    assert imops.run("export", "onnx", src, tmp_path / "x.onnx", "--opset", 12, check=False).returncode == 2
    assert imops.run("export", "onnx", src, check=False).returncode == 2
    assert imops.run("export", "tflite", src, "x", check=False).returncode == 2
    assert imops.run("export", "onnx", src, tmp_path, check=False).returncode == 2  # a directory
    assert "--with-preprocess" in imops.run("export", "onnx", "--help").stdout
    # an existing output file is replaced whole; no temporary files are left behind
    out = tmp_path / "replace" / "m.onnx"
    out.parent.mkdir()
    out.write_bytes(b"old contents")
    imops.run("export", "onnx", src, out, env=env)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert os.listdir(out.parent) == ["m.onnx"]
    # an unwritable destination fails cleanly and leaves the old file
    p = imops.run("export", "onnx", src, tmp_path / "no" / "such" / "dir" / "m.onnx", check=False, env=env)
    assert p.returncode == 1
