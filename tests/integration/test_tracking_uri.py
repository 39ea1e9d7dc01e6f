"""imops train / test logging through MLflow's REST API (--tracking-uri, or
MLFLOW_TRACKING_URI) to `imops server` and to a real `mlflow server` (SQLite
backend, artifacts served through its mlflow-artifacts proxy) started here on
loopback; the official mlflow client then reads back the params, metrics,
tags and the model artifact, and `imops test --model runs:/...` fetches the
model back through the server. `imops export onnx --tracking-uri` logs
model.onnx and the MLmodel onnx flavor into the run on the server, where the
official client downloads it and ONNX Runtime matches `imops predict`."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow (tests/requirements.txt) is not installed")
requests = pytest.importorskip("requests")
from mlflow import MlflowClient  # noqa: E402

from test_mlflow_client import Server  # noqa: E402

os.environ.pop("MLFLOW_TRACKING_TOKEN", None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` (the full PyPI package) on a free loopback port, stopped by PID."""

    def __init__(self, tmp):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "mlflow-server.log", "wb")
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        self.proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2",
             "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination",
             str(tmp / "mlartifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, f"mlflow server exited: {(tmp / 'mlflow-server.log').read_text()[-3000:]}"
            try:
                if requests.get(self.url + "/health", timeout=10).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            time.sleep(0.3)
        raise AssertionError("mlflow server did not start")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # gunicorn and its workers (their own session)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def tiny_data(imops, tmp_path_factory):
    data = tmp_path_factory.mktemp("turi") / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 120, "--size", 64, "--seed", 9, "--no-sheet")
    imops.run("preprocess", "--data", data, "--img-size", 32)
    return data


def train_and_check(imops, url, data, tmp_path, use_env):
    env = {"IMOPS_HOME": str(tmp_path / "local-ws")}
    args = ["train", "--data", data, "--model", "smallcnn", "--epochs", 2, "--batch-size", 16, "--lr", 0.01,
            "--experiment", "remote-exp", "--run-name", "over-rest", "--output", tmp_path / "out", "--log-every", 1]
    if use_env:
        env["MLFLOW_TRACKING_URI"] = url
    else:
        args += ["--tracking-uri", url]
    r = imops.json(*args, env=env, timeout=900)
    rid = r["run_id"]
    # nothing went into the local workspace store
    assert not (tmp_path / "local-ws" / "imops.db").exists()

    mlflow.set_tracking_uri(url)
    client = MlflowClient(url)
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and run.info.run_name == "over-rest"
    assert client.get_experiment(run.info.experiment_id).name == "remote-exp"
    assert run.data.params["lr"] in ("0.01", "0.010000") and run.data.params["model"] == "smallcnn"
    assert run.data.tags["mlflow.source.name"] == "imops train"
    for k in ("train_loss", "val_accuracy", "lr", "best_val_accuracy"):
        assert k in run.data.metrics, k
    hist = client.get_metric_history(rid, "train_loss")
    assert sorted(m.step for m in hist) == [1, 2]
    assert abs(hist[-1].value - r["history"][-1]["train_loss"]) < 1e-6
    steps = client.get_metric_history(rid, "train_loss_step")
    assert len(steps) >= 2
    names = {a.path for a in client.list_artifacts(rid, "model")}
    assert {"model/MLmodel", "model/model.json", "model/model.safetensors"} <= names
    assert [a.path for a in client.list_artifacts(rid, "plots")] == ["plots/training_curves.svg"]
    dl = tmp_path / "dl"
    dl.mkdir()
    got = Path(mlflow.artifacts.download_artifacts(f"runs:/{rid}/model", dst_path=str(dl)))
    local = tmp_path / "out" / "model" / "model.safetensors"
    assert (got / "model.safetensors").read_bytes() == local.read_bytes()

    # imops test fetches the model back through the server and logs into the same run
    targs = ["test", "--model", f"runs:/{rid}/model", "--data", data]
    t = imops.json(*targs, *([] if use_env else ["--tracking-uri", url]), env=env)
    assert t["run_id"] == rid
    run = client.get_run(rid)
    assert "test_accuracy" in run.data.metrics and abs(run.data.metrics["test_accuracy"] - t["accuracy"]) < 1e-9
    assert "test_metrics.json" in {a.path for a in client.list_artifacts(rid)}
    cached = list((tmp_path / "local-ws" / "cache" / "artifacts").glob("*/model/model.safetensors"))
    assert len(cached) == 1 and cached[0].read_bytes() == local.read_bytes()
    # the registry: models:/ through the server too
    mv = mlflow.register_model(f"runs:/{rid}/model", "turi-model") if use_env else None
    if mv:
        t2 = imops.json("test", "--model", "models:/turi-model/1", "--data", data, "--no-track", env=env)
        assert t2["accuracy"] == t["accuracy"]
    return rid


def test_train_to_imops_server(imops, imops_bin, tiny_data, tmp_path):
    srv = Server(imops_bin, tmp_path / "srv-ws")
    try:
        train_and_check(imops, srv.url, tiny_data, tmp_path / "flag", use_env=False)
        train_and_check(imops, srv.url, tiny_data, tmp_path / "env", use_env=True)
    finally:
        srv.stop()


def test_train_to_mlflow_server(imops, tiny_data, tmp_path):
    srv = MlflowServer(tmp_path)
    try:
        train_and_check(imops, srv.url, tiny_data, tmp_path / "flag", use_env=False)
        train_and_check(imops, srv.url, tiny_data, tmp_path / "env", use_env=True)
        # artifacts landed in mlflow's own artifacts destination
        assert list((tmp_path / "mlartifacts").rglob("model.safetensors"))
    finally:
        srv.stop()


def test_unreachable_server_is_a_clear_error(imops, tiny_data, tmp_path):
    port = free_port()
    p = imops.run("train", "--data", tiny_data, "--model", "smallcnn", "--epochs", 1, "--tracking-uri",
                  f"http://127.0.0.1:{port}", check=False, env={"IMOPS_HOME": str(tmp_path / "ws")}, timeout=300)
    assert p.returncode == 1 and f"127.0.0.1:{port}" in p.stderr


def test_export_onnx_through_imops_server(imops, imops_bin, tiny_data, tmp_path):
    """imops export onnx --tracking-uri: the model is fetched through `imops server`, and
    model.onnx plus the MLmodel onnx flavor land in the run's artifacts there (for runs:/
    and models:/ sources); the official client downloads the file, ONNX Runtime runs it and
    gives what `imops predict` gives."""
    np = pytest.importorskip("numpy")
    ort = pytest.importorskip("onnxruntime")
    import json
    from PIL import Image
    from mlflow.models import Model

    srv = Server(imops_bin, tmp_path / "srv-ws")
    env = {"IMOPS_HOME": str(tmp_path / "local-ws")}
    try:
        r = imops.json("train", "--data", tiny_data, "--model", "surfacenet", "--epochs", 1, "--batch-size", 16,
                       "--lr", 0.01, "--experiment", "onnx-remote", "--output", tmp_path / "out", "--tracking-uri",
                       srv.url, env=env, timeout=900)
        rid = r["run_id"]
        out = tmp_path / "exported.onnx"
        e = imops.json("export", "onnx", f"runs:/{rid}/model", out, "--probabilities", "--tracking-uri", srv.url,
                       env=env)
        assert e["tracked"] and e["run_id"] == rid and e["artifact"] == "model/model.onnx"
        assert not (tmp_path / "local-ws" / "imops.db").exists()

        mlflow.set_tracking_uri(srv.url)
        client = MlflowClient(srv.url)
        names = {a.path for a in client.list_artifacts(rid, "model")}
        assert {"model/MLmodel", "model/model.onnx", "model/model.safetensors"} <= names
        dl = tmp_path / "dl"
        dl.mkdir()
        got = Path(mlflow.artifacts.download_artifacts(f"runs:/{rid}/model", dst_path=str(dl),
                                                       tracking_uri=srv.url))
        assert (got / "model.onnx").read_bytes() == out.read_bytes()
        ml = Model.load(str(got / "MLmodel"))
        assert ml.flavors["onnx"]["data"] == "model.onnx" and ml.flavors["onnx"]["opset"] == 17
        assert "imops" in ml.flavors and ml.run_id == rid
        # the same bytes sit in the server's own artifact store
        stored = list((tmp_path / "srv-ws").rglob(f"{rid}/artifacts/model/model.onnx"))
        assert len(stored) == 1 and stored[0].read_bytes() == out.read_bytes()

        # ONNX Runtime on the downloaded file against imops predict (through the server too), on
        # PNGs already at the model's size, so that both see the same pixels
        meta = json.loads((got / "model.json").read_text())
        size = meta["img_size"] if isinstance(meta["img_size"], int) else meta["img_size"][0]
        split = json.loads((tiny_data / ".imops" / "split.json").read_text())
        files = []
        for i, f in enumerate([f for f in split["files"] if f["split"] == "test"][:8]):
            files.append(str(tmp_path / f"img{i}.png"))
            Image.open(tiny_data / f["file"]).convert("RGB").resize((size, size)).save(files[-1])
        p = imops.json("predict", "--model", f"runs:/{rid}/model", "--tracking-uri", srv.url, *files, env=env)
        want = np.asarray([q["logits"] for q in p["predictions"]], np.float64)
        x = np.stack([np.asarray(Image.open(f), np.float32) for f in files]).transpose(0, 3, 1, 2)
        mean, std = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)
        scale = np.float32(1.0) / (np.float32(255.0) * std)
        x = (x * scale[None, :, None, None] + (-mean / std)[None, :, None, None]).astype(np.float32)
        sess = ort.InferenceSession(str(got / "model.onnx"), providers=["CPUExecutionProvider"])
        logits, probs = sess.run(None, {"image": x})
        diff = np.abs(logits - want)
        assert (diff <= 1e-5 + 1e-4 * np.abs(want)).all(), diff.max()
        assert (logits.argmax(1) == np.asarray([q["class"] for q in p["predictions"]])).all()
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)

        # a registered version (models:/) through MLFLOW_TRACKING_URI: the same run's bundle is updated
        mlflow.register_model(f"runs:/{rid}/model", "onnx-remote-model")
        e2 = imops.json("export", "onnx", "models:/onnx-remote-model/1", tmp_path / "v1.onnx", "--with-preprocess",
                        env=dict(env, MLFLOW_TRACKING_URI=srv.url))
        assert e2["tracked"] and e2["run_id"] == rid and e2["artifact"] == "model/model.onnx"
        dl2 = tmp_path / "dl2"
        dl2.mkdir()
        got2 = Path(mlflow.artifacts.download_artifacts(f"runs:/{rid}/model", dst_path=str(dl2),
                                                        tracking_uri=srv.url))
        assert (got2 / "model.onnx").read_bytes() == (tmp_path / "v1.onnx").read_bytes()
        ml2 = (got2 / "MLmodel").read_text()
        assert ml2.count("  onnx:") == 1 and "preprocess: normalize" in ml2
        # --no-track leaves the run alone
        e3 = imops.json("export", "onnx", f"runs:/{rid}/model", tmp_path / "nt.onnx", "--no-track", "--tracking-uri",
                        srv.url, env=env)
        assert not e3["tracked"]
    finally:
        srv.stop()
    # the server is gone: a clear error naming it
    p = imops.run("export", "onnx", f"runs:/{rid}/model", tmp_path / "x.onnx", "--tracking-uri", srv.url,
                  check=False, env=dict(env, IMOPS_HOME=str(tmp_path / "ws-empty")))
    assert p.returncode == 1 and f"127.0.0.1:{srv.port}" in p.stderr
