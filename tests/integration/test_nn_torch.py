"""imops model bundles against PyTorch: the weights imops writes load into the
equivalent torchvision (or SurfaceNet) module with load_state_dict(strict=True)
and give the same logits; model.json and MLmodel read as documented.

The bundles come from the C unit-test binary test_nn run with IM_NN_EXPORT_DIR
(freshly initialized models, an input batch and imops' logits for it). Skipped
when torch is not importable (the venv sees Debian's python3-torch)."""
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "ref"))
from gen_model_fixtures import SurfaceNet, convnext_atto  # noqa: E402

ATOL, RTOL = 1e-4, 1e-3
DTYPES = {"F32": np.float32, "I32": np.int32, "U8": np.uint8, "I64": np.int64, "F64": np.float64}


def read_safetensors(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(body[b:e], dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out


def find_test_nn():
    env = os.environ.get("IMOPS_TEST_NN")
    if env:
        return env
    imops_bin = os.environ.get("IMOPS_BIN")
    build = Path(imops_bin).parent if imops_bin else ROOT / "build"
    return str(build / "test_nn")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    binary = find_test_nn()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"test_nn not found at {binary}; build the unit tests (or set IMOPS_TEST_NN)")
    out = tmp_path_factory.mktemp("nn-export")
    p = subprocess.run([binary], env=dict(os.environ, IM_NN_EXPORT_DIR=str(out)), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return out


MODELS = {
    "surfacenet": lambda: SurfaceNet(num_classes=2),
    "smallcnn": lambda: SurfaceNet(num_classes=10, in_channels=1, stem_stride=1),
    "resnet18": lambda: torchvision.models.resnet18(num_classes=2),
    "convnext-atto": lambda: convnext_atto(num_classes=2),
}


def close(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    diff = np.abs(ours - ref)
    return float(diff.max()), bool(np.all(diff <= ATOL + RTOL * np.abs(ref)))


@pytest.mark.parametrize("arch", list(MODELS))
def test_weights_load_into_torch(exported, arch):
    d = exported / arch
    sd = {k: torch.from_numpy(v) for k, v in read_safetensors(d / "model.safetensors").items()}
    model = MODELS[arch]()
    want = model.state_dict()
    assert list(sd) and set(sd) == set(want)
    model.load_state_dict(sd, strict=True)  # num_batches_tracked (F32 in the file) is cast to int64
    assert model.state_dict()[next(k for k in want if k.endswith("weight"))].dtype == torch.float32
    check = read_safetensors(d / "check.safetensors")
    x = torch.from_numpy(check["x"])
    with torch.no_grad():
        model.eval()
        mx, ok = close(model(x).numpy(), check["logits_eval"])
        assert ok, f"{arch}: eval logits differ by {mx}"
        model.train()
        mx, ok = close(model(x).numpy(), check["logits_train"])
        assert ok, f"{arch}: train-mode logits differ by {mx}"


@pytest.mark.parametrize("arch", list(MODELS))
def test_bundle_files(exported, arch):
    yaml = pytest.importorskip("yaml")
    d = exported / arch
    meta = json.loads((d / "model.json").read_text())
    assert meta["format"] == "imops-model" and meta["format_version"] == 1
    assert meta["arch"] == arch
    model = MODELS[arch]()
    assert meta["num_params"] == sum(p.numel() for p in model.parameters())
    c, (h, w), k = meta["in_channels"], meta["img_size"], meta["num_classes"]
    assert len(meta["classes"]) == k and len(meta["mean"]) == c and len(meta["std"]) == c
    ml = yaml.safe_load((d / "MLmodel").read_text())
    assert ml["artifact_path"] == "model"
    assert ml["flavors"]["imops"]["data"] == "model.json"
    assert ml["flavors"]["imops"]["weights"] == "model.safetensors"
    assert ml["model_uuid"] == meta["model_uuid"] and len(ml["model_uuid"]) == 32
    inputs = json.loads(ml["signature"]["inputs"])
    outputs = json.loads(ml["signature"]["outputs"])
    assert inputs == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, c, h, w]}}]
    assert outputs == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, k]}}]


def test_mlflow_reads_mlmodel(exported):
    mlflow_models = pytest.importorskip("mlflow.models")
    m = mlflow_models.Model.load(str(exported / "resnet18" / "MLmodel"))
    assert "imops" in m.flavors
    assert list(m.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3, 64, 64]
