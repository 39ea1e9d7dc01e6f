"""imops train / test logging through MLflow's REST API (--tracking-uri, or
MLFLOW_TRACKING_URI) to `imops server` and to a real `mlflow server` (SQLite
backend, artifacts served through its mlflow-artifacts proxy) started here on
loopback; the official mlflow client then reads back the params, metrics,
tags and the model artifact, and `imops test --model runs:/...` fetches the
model back through the server."""
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
