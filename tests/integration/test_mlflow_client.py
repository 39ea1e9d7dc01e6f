"""imops server against the official MLflow client (mlflow-skinny, unmodified):
tracking, registry, the mlflow-artifacts proxy, MLflow's error format, path
traversal, the bearer token, atomic uploads and concurrent writers."""
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny (tests/requirements.txt) is not installed")
requests = pytest.importorskip("requests")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

# Fail fast instead of retrying with back-off: the server must answer right the first time.
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
os.environ.pop("MLFLOW_TRACKING_TOKEN", None)

LINE = re.compile(r"^imops server listening on http://127\.0\.0\.1:(\d+) "
                  r"\(tracking, registry, artifacts; workspace (.+)\)$")


class Server:
    """An `imops server` on an ephemeral loopback port, stopped with SIGTERM by PID."""

    def __init__(self, binary, home, *args, env=None):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.out = self.home.parent / (self.home.name + ".stdout")
        self.err = self.home.parent / (self.home.name + ".stderr")
        full_env = dict(os.environ, IMOPS_HOME=str(self.home))
        full_env.pop("IMOPS_TOKEN", None)
        full_env.update(env or {})
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen([binary, "server", "--host", "127.0.0.1", "--port", "0", *args],
                                         stdout=o, stderr=e, env=full_env)
        deadline = time.time() + 30
        m = None
        while time.time() < deadline and m is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"imops server exited {self.proc.returncode}: {self.err.read_text()}")
            lines = self.out.read_text().splitlines()
            m = LINE.match(lines[0]) if lines else None
            if m is None:
                time.sleep(0.05)
        assert m, f"no start line from imops server: {self.out.read_text()!r} {self.err.read_text()!r}"
        self.port = int(m.group(1))
        assert Path(m.group(2)) == self.home.resolve()
        self.url = f"http://127.0.0.1:{self.port}"
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=2).text == "OK":
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        else:
            raise AssertionError("imops server did not answer /health")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError("imops server did not stop on SIGTERM")
        err = self.err.read_text()
        assert self.proc.returncode == 0, f"imops server exited {self.proc.returncode}:\n{err[-6000:]}"
        assert "ERROR: AddressSanitizer" not in err and "runtime error" not in err, err[-6000:]

    def api(self, method, endpoint, **kw):
        return requests.request(method, f"{self.url}/api/2.0/{endpoint}", timeout=60, **kw)

    def raw(self, method, target, body=b"", headers=None):
        """A request with the target sent exactly as given (no URL normalisation)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.putrequest(method, target, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                c.putheader(k, v)
            c.putheader("Content-Length", str(len(body)))
            c.endheaders(body)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()


@pytest.fixture(scope="module")
def server(imops_bin, tmp_path_factory):
    s = Server(imops_bin, tmp_path_factory.mktemp("mlflow") / "ws")
    yield s
    s.stop()


@pytest.fixture
def client(server):
    mlflow.set_tracking_uri(server.url)
    return MlflowClient(server.url)


def model_dir(root):
    """A model bundle as imops writes it: MLmodel, model.json, weights, a nested file."""
    d = Path(root) / "model"
    (d / "extra").mkdir(parents=True)
    (d / "MLmodel").write_text("artifact_path: model\nflavors:\n  imops:\n    format: safetensors\n")
    (d / "model.json").write_text(json.dumps({"arch": "surfacenet", "classes": ["Negative", "Positive"]}))
    (d / "model.safetensors").write_bytes(os.urandom(300_000))
    (d / "extra" / "notes with space.txt").write_text("hello\n")
    return d


def tree_digest(d):
    d = Path(d)
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def err_of(r):
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.text
    j = r.json()
    assert set(j) >= {"error_code", "message"}, j
    return j["error_code"]


# ---- the seed's flow ---------------------------------------------------------------------


def test_seed_flow(server, client, tmp_path):
    exp = mlflow.set_experiment("surface-seed")
    run = mlflow.start_run()
    run_id = run.info.run_id
    assert run.info.artifact_uri == f"mlflow-artifacts:/{exp.experiment_id}/{run_id}/artifacts"
    mlflow.log_params({"lr": 0.01, "epochs": 3, "arch": "surfacenet"})
    for epoch in range(3):
        mlflow.log_metrics({"train_loss": 1.0 / (epoch + 1), "val_accuracy": 0.8 + 0.05 * epoch}, step=epoch)
    src = model_dir(tmp_path / "src")
    mlflow.log_artifacts(str(src), artifact_path="model")
    mlflow.end_run()

    r = client.get_run(run_id)
    assert r.info.status == "FINISHED" and r.info.end_time
    assert r.data.params == {"lr": "0.01", "epochs": "3", "arch": "surfacenet"}
    assert r.data.metrics["val_accuracy"] == pytest.approx(0.9)
    hist = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, round(m.value, 6)) for m in hist] == [(0, 1.0), (1, 0.5), (2, 0.333333)]
    # the bytes are in the workspace's artifact store, in the local store's layout
    on_disk = server.home / "artifacts" / exp.experiment_id / run_id / "artifacts" / "model"
    assert tree_digest(on_disk) == tree_digest(src)
    listed = sorted(f.path for f in client.list_artifacts(run_id, "model"))
    assert listed == ["model/MLmodel", "model/extra", "model/model.json", "model/model.safetensors"]

    mv = mlflow.register_model(f"runs:/{run_id}/model", "surface")
    assert mv.version == "1" and mv.status == "READY" and mv.run_id == run_id
    versions = client.search_model_versions("name='surface'")
    assert [(v.name, v.version, v.run_id) for v in versions] == [("surface", "1", run_id)]
    client.set_registered_model_alias("surface", "production", "1")
    by_alias = client.get_model_version_by_alias("surface", "production")
    assert by_alias.version == "1" and "production" in by_alias.aliases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        staged = client.transition_model_version_stage("surface", "1", "Production")
        assert staged.current_stage == "Production"
        latest = client.get_latest_versions("surface", stages=["Production"])
    assert [v.version for v in latest] == ["1"]
    assert client.get_registered_model("surface").aliases == {"production": "1"}

    for uri in ("models:/surface/1", "models:/surface@production", "models:/surface/Production"):
        dst = tmp_path / ("dl-" + re.sub(r"\W", "_", uri))
        local = mlflow.artifacts.download_artifacts(uri, dst_path=str(dst))
        got = {k: v for k, v in tree_digest(local).items() if k != "registered_model_meta"}
        assert got == tree_digest(src), uri


# ---- tracking -------------------------------------------------------------------------------


def test_experiments(server, client):
    eid = client.create_experiment("exp-a", tags={"team": "vision"})
    assert eid.isdigit()
    e = client.get_experiment(eid)
    assert e.name == "exp-a" and e.tags["team"] == "vision" and e.lifecycle_stage == "active"
    assert e.artifact_location == f"mlflow-artifacts:/{eid}"
    assert client.get_experiment_by_name("exp-a").experiment_id == eid
    assert client.get_experiment_by_name("no-such-experiment") is None
    with pytest.raises(MlflowException) as ei:
        client.create_experiment("exp-a")
    assert ei.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as ei:
        client.get_experiment("987654")
    assert ei.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.create_experiment("exp-b")
    names = [x.name for x in client.search_experiments(filter_string="name LIKE 'exp-%'", order_by=["name DESC"])]
    assert names == ["exp-b", "exp-a"]
    client.set_experiment_tag(eid, "stage", "dev")
    client.rename_experiment(eid, "exp-a2")
    assert client.get_experiment(eid).name == "exp-a2" and client.get_experiment(eid).tags["stage"] == "dev"
    client.delete_experiment(eid)
    assert client.get_experiment(eid).lifecycle_stage == "deleted"
    from mlflow.entities import ViewType
    deleted = [x.experiment_id for x in client.search_experiments(view_type=ViewType.DELETED_ONLY)]
    assert eid in deleted
    client.restore_experiment(eid)
    assert client.get_experiment(eid).lifecycle_stage == "active"
    # GET search is routed too, and every route lives under /ajax-api as well
    r = requests.get(server.url + "/ajax-api/2.0/mlflow/experiments/search", params={"max_results": 1000},
                     timeout=30)
    assert r.status_code == 200 and len(r.json()["experiments"]) >= 3


def test_runs(server, client):
    eid = client.create_experiment("runs-exp")
    run = client.create_run(eid, run_name="alpha", tags={"k": "v"})
    rid = run.info.run_id
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and run.info.run_name == "alpha"
    client.log_param(rid, "lr", "0.1")
    client.log_param(rid, "lr", "0.1")  # same value again: fine
    with pytest.raises(MlflowException) as ei:
        client.log_param(rid, "lr", "0.2")
    assert ei.value.error_code == "INVALID_PARAMETER_VALUE"
    client.log_metric(rid, "acc", 0.5, step=0)
    client.log_metric(rid, "acc", float("nan"), step=1)
    client.log_metric(rid, "acc", 0.75, step=2)
    client.log_batch(rid, metrics=[Metric("loss", 0.3, 1000, 0), Metric("loss", float("inf"), 1001, 1)],
                     params=[Param("bs", "32")], tags=[RunTag("note", "batch")])
    client.set_tag(rid, "gone", "x")
    client.delete_tag(rid, "gone")
    client.log_inputs(rid, [DatasetInput(Dataset("surface", "abc123", "local", '{"uri": "/data"}'),
                                         tags=[InputTag("mlflow.data.context", "train")])])
    r = client.get_run(rid)
    assert r.data.params == {"lr": "0.1", "bs": "32"}
    assert r.data.metrics["acc"] == 0.75 and r.data.metrics["loss"] == float("inf")
    assert r.data.tags["note"] == "batch" and r.data.tags["k"] == "v" and "gone" not in r.data.tags
    vals = [m.value for m in client.get_metric_history(rid, "acc")]
    assert vals[0] == 0.5 and vals[1] != vals[1] and vals[2] == 0.75
    other = client.create_run(eid, run_name="beta")
    client.log_metric(other.info.run_id, "acc", 0.25)
    found = client.search_runs([eid], filter_string="metrics.acc > 0.5")
    assert [x.info.run_id for x in found] == [rid]
    ordered = client.search_runs([eid], order_by=["metrics.acc ASC"])
    assert [x.info.run_name for x in ordered] == ["beta", "alpha"]
    page = client.search_runs([eid], max_results=1)
    assert len(page) == 1 and page.token
    client.set_terminated(rid, "FAILED")
    assert client.get_run(rid).info.status == "FAILED"
    client.update_run(rid, name="alpha2")
    assert client.get_run(rid).info.run_name == "alpha2"
    client.delete_run(other.info.run_id)
    assert [x.info.run_name for x in client.search_runs([eid])] == ["alpha2"]
    client.restore_run(other.info.run_id)
    assert len(client.search_runs([eid])) == 2
    # the REST listing (used by the UI): run-relative paths, the root URI clients see
    client.log_text(rid, "hello", "notes/readme.txt")
    j = server.api("GET", "mlflow/artifacts/list", params={"run_id": rid, "path": "notes"}).json()
    assert j["root_uri"] == r.info.artifact_uri
    assert j["files"] == [{"path": "notes/readme.txt", "is_dir": False, "file_size": 5}]


def test_registry(server, client):
    client.create_registered_model("reg", tags={"owner": "ml"}, description="first")
    with pytest.raises(MlflowException) as ei:
        client.create_registered_model("reg")
    assert ei.value.error_code == "RESOURCE_ALREADY_EXISTS"
    v1 = client.create_model_version("reg", "mlflow-artifacts:/0/x/artifacts/model", tags={"t": "1"})
    v2 = client.create_model_version("reg", "mlflow-artifacts:/0/y/artifacts/model", description="two")
    assert (v1.version, v2.version) == ("1", "2")
    client.update_registered_model("reg", description="updated")
    client.set_registered_model_tag("reg", "k", "v")
    client.delete_registered_model_tag("reg", "owner")
    m = client.get_registered_model("reg")
    assert m.description == "updated" and m.tags == {"k": "v"}
    client.update_model_version("reg", "1", description="one")
    client.set_model_version_tag("reg", "1", "qa", "passed")
    client.delete_model_version_tag("reg", "1", "t")
    mv = client.get_model_version("reg", "1")
    assert mv.description == "one" and mv.tags == {"qa": "passed"}
    client.set_registered_model_alias("reg", "champion", "2")
    with pytest.raises(MlflowException) as ei:
        client.set_registered_model_alias("reg", "latest", "1")
    assert ei.value.error_code == "INVALID_PARAMETER_VALUE"
    client.delete_registered_model_alias("reg", "champion")
    with pytest.raises(MlflowException) as ei:
        client.get_model_version_by_alias("reg", "champion")
    assert ei.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage("reg", "1", "staging")
        client.transition_model_version_stage("reg", "2", "Staging", archive_existing_versions=True)
    assert client.get_model_version("reg", "1").current_stage == "Archived"
    assert client.get_model_version_download_uri("reg", "2") == "mlflow-artifacts:/0/y/artifacts/model"
    # get-latest-versions answers GET as well as POST
    r = server.api("GET", "mlflow/registered-models/get-latest-versions", params={"name": "reg", "stages": "Staging"})
    assert [v["version"] for v in r.json()["model_versions"]] == ["2"]
    client.rename_registered_model("reg", "reg2")
    assert [m.name for m in client.search_registered_models(filter_string="name LIKE 'reg%'")] == ["reg2"]
    assert {v.version for v in client.search_model_versions("name='reg2'")} == {"1", "2"}
    client.delete_model_version("reg2", "1")
    with pytest.raises(MlflowException) as ei:
        client.get_model_version("reg2", "1")
    assert ei.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_registered_model("reg2")
    with pytest.raises(MlflowException) as ei:
        client.get_registered_model("reg2")
    assert ei.value.error_code == "RESOURCE_DOES_NOT_EXIST"


# ---- errors ----------------------------------------------------------------------------------


def test_errors(server, client):
    hdr = {"Content-Type": "application/json"}
    r = server.api("POST", "mlflow/experiments/create", data=b'{"name": ', headers=hdr)
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "mlflow/experiments/create", data=b'[1, 2]', headers=hdr)
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "mlflow/experiments/create", data=b'{"name": "x"}')  # no Content-Type
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE" and "Content-Type" in r.json()["message"]
    r = server.api("POST", "mlflow/experiments/create", json={})
    assert r.status_code == 400 and "name" in r.json()["message"]
    # a double-encoded body (old clients) is accepted
    r = server.api("POST", "mlflow/experiments/create", data=json.dumps(json.dumps({"name": "dbl"})), headers=hdr)
    assert r.status_code == 200 and r.json()["experiment_id"]
    unknown = "0123456789abcdef0123456789abcdef"
    r = server.api("GET", "mlflow/runs/get", params={"run_id": unknown})
    assert r.status_code == 404 and err_of(r) == "RESOURCE_DOES_NOT_EXIST"
    r = server.api("POST", "mlflow/runs/log-metric",
                   json={"run_id": unknown, "key": "a", "value": 1, "timestamp": 1, "step": 0})
    assert r.status_code == 404 and err_of(r) == "RESOURCE_DOES_NOT_EXIST"
    r = server.api("GET", "mlflow/registered-models/get", params={"name": "nope"})
    assert r.status_code == 404 and err_of(r) == "RESOURCE_DOES_NOT_EXIST"
    r = server.api("GET", "mlflow/model-versions/get", params={"name": "nope", "version": "abc"})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "mlflow/runs/log-metric", json={"run_id": unknown, "key": "a", "value": "x", "timestamp": 1})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "mlflow/runs/search", json={"filter": "metrics.acc >>> 1"})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "mlflow/runs/search", json={"max_results": 50001})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    # log-batch over MLflow's limits: 400, and nothing of it stored
    rid = client.create_run("0").info.run_id
    too_many = [{"key": "m", "value": i, "timestamp": 1, "step": i} for i in range(1001)]
    r = server.api("POST", "mlflow/runs/log-batch", json={"run_id": rid, "metrics": too_many})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE" and "1000" in r.json()["message"]
    params = [{"key": f"p{i}", "value": "v"} for i in range(101)]
    r = server.api("POST", "mlflow/runs/log-batch", json={"run_id": rid, "params": params})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    big = [{"key": "t", "value": "x" * 5000}] * 100 + [{"key": "u" * 200, "value": "y" * 5000}] * 100
    r = server.api("POST", "mlflow/runs/log-batch", json={"run_id": rid, "tags": big})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    dup = [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]
    r = server.api("POST", "mlflow/runs/log-batch", json={"run_id": rid, "params": dup})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    data = client.get_run(rid).data
    assert not data.metrics and not data.params
    # unknown routes: MLflow's empty 404
    r = server.api("GET", "mlflow/no-such-endpoint")
    assert r.status_code == 404 and r.content == b""
    assert requests.get(server.url + "/version", timeout=10).text.strip()
    assert requests.get(server.url + "/health", timeout=10).text == "OK"


def test_artifact_path_traversal(server, client, tmp_path):
    outside = server.home.parent
    before = {p for p in outside.rglob("*") if "artifacts" not in p.parts}
    base = "/api/2.0/mlflow-artifacts/artifacts/"
    bad = ["../../escape.txt", "0/../../escape.txt", "%2e%2e/%2e%2e/escape.txt", "0/%2E%2E/%2e%2E/escape.txt",
           "%252e%252e/%252e%252e/escape.txt", "..%2f..%2fescape.txt", "..%5c..%5cescape.txt",
           "..\\..\\escape.txt", "/etc/escape.txt", "%2fetc%2fescape.txt", "C:/escape.txt", "a/./b.txt",
           "a%00b.txt", "a%0ab.txt"]
    for p in bad:
        for method in ("PUT", "GET", "DELETE"):
            status, body = server.raw(method, base + p, b"pwned" if method == "PUT" else b"")
            assert status == 400, (method, p, status, body)
            assert json.loads(body)["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"), (p, body)
    for q in ("../..", "%2e%2e", "/etc", "..%2f.."):
        status, body = server.raw("GET", "/api/2.0/mlflow-artifacts/artifacts?path=" + q)
        assert status == 400 and json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE", (q, body)
    rid = client.create_run("0").info.run_id
    r = server.api("GET", "mlflow/artifacts/list", params={"run_id": rid, "path": "../../.."})
    assert r.status_code == 400 and err_of(r) == "INVALID_PARAMETER_VALUE"
    # the database next to the artifact root is out of reach
    status, _ = server.raw("GET", base + "../imops.db")
    assert status == 400
    # a link inside the root that points out of it is not followed
    (server.home / "artifacts" / "0").mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    os.symlink(tmp_path, server.home / "artifacts" / "0" / "link")
    for method in ("GET", "PUT"):
        status, body = server.raw(method, base + "0/link/secret.txt", b"overwrite" if method == "PUT" else b"")
        assert status == 400, (method, status, body)
    assert secret.read_text() == "secret"
    after = {p for p in outside.rglob("*") if "artifacts" not in p.parts}
    assert not [p for p in after - before if "escape" in p.name]
    assert not list(Path("/etc").glob("escape.txt"))
    assert (server.home / "imops.db").exists()
    # the server is still fine
    assert requests.get(server.url + "/health", timeout=10).text == "OK"


def test_artifact_proxy_rest(server):
    base = server.url + "/api/2.0/mlflow-artifacts/artifacts"
    r = requests.put(base + "/9/r/artifacts/dir/a.json", data=b'{"a": 1}', timeout=30)
    assert r.status_code == 200 and r.json() == {}
    r = requests.get(base + "/9/r/artifacts/dir/a.json", timeout=30)
    assert r.content == b'{"a": 1}' and r.headers["Content-Type"] == "application/json"
    assert r.headers["Content-Disposition"] == 'attachment; filename="a.json"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = requests.get(base, params={"path": "9/r/artifacts"}, timeout=30)
    assert r.json() == {"files": [{"path": "dir", "is_dir": True}]}
    r = requests.get(base + "/9/r/artifacts/missing.bin", timeout=30)
    assert r.status_code == 404 and err_of(r) == "RESOURCE_DOES_NOT_EXIST"
    assert requests.delete(base + "/9/r", timeout=30).status_code == 200
    assert requests.get(base, params={"path": "9"}, timeout=30).json().get("files", []) == []


def test_upload_is_atomic(server):
    """A half-sent upload is invisible; a replaced file is read whole, old or new."""
    target = "/api/2.0/mlflow-artifacts/artifacts/7/atomic/artifacts/big.bin"
    payload = os.urandom(4 << 20)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        s.sendall(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode() + payload[: len(payload) // 2])
        time.sleep(0.3)
        listing = requests.get(server.url + "/api/2.0/mlflow-artifacts/artifacts",
                               params={"path": "7/atomic/artifacts"}, timeout=30).json()
        assert listing.get("files", []) == []
        assert requests.get(server.url + target, timeout=30).status_code == 404
        s.sendall(payload[len(payload) // 2:])
        assert s.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        s.close()
    assert requests.get(server.url + target, timeout=30).content == payload
    v1, v2 = b"1" * (2 << 20), b"2" * (3 << 20)
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set() and i < 40:
            r = requests.put(server.url + target, data=v1 if i % 2 else v2, timeout=30)
            if r.status_code != 200:
                errors.append(r.text)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(40):
            body = requests.get(server.url + target, timeout=30).content
            assert body in (v1, v2, payload), len(body)
    finally:
        stop.set()
        t.join()
    assert not errors


# ---- auth ---------------------------------------------------------------------------------------


def vm_hwm_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_large_upload_is_streamed_to_disk(imops_bin, tmp_path):
    """A 256 MiB artifact goes to disk as it arrives: the server's peak memory grows by far
    less than the upload, and the artifact arrives whole."""
    s = Server(imops_bin, tmp_path / "ws")
    try:
        big = tmp_path / "big.bin"
        with open(big, "wb") as f:
            for _ in range(256):
                f.write(os.urandom(1 << 20))
        before = vm_hwm_kib(s.proc.pid)
        with open(big, "rb") as f:
            r = requests.put(s.url + "/api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/big.bin", data=f, timeout=600)
        assert r.status_code == 200, r.text
        grown = vm_hwm_kib(s.proc.pid) - before
        assert grown < 64 * 1024, f"the server's peak memory grew by {grown} KiB for a 256 MiB upload"
        stored = tmp_path / "ws" / "artifacts" / "0" / "run" / "artifacts" / "big.bin"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()
        assert not list((tmp_path / "ws" / "tmp" / "uploads").iterdir())  # nothing left in the spool
        big.unlink()
    finally:
        s.stop()


def test_token_refuses_before_the_body(imops_bin, tmp_path):
    """A write without the token is answered from its headers: a client that announces a
    1 GiB upload and sends no byte of it still gets its 401 (the body is never read)."""
    s = Server(imops_bin, tmp_path / "ws", "--token", "s3cret")
    try:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        c.putrequest("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/big.bin")
        c.putheader("Content-Length", str(1 << 30))
        c.endheaders()  # no body follows
        r = c.getresponse()
        assert r.status == 401 and json.loads(r.read())["error_code"] == "UNAUTHENTICATED"
        assert r.getheader("Connection", "").lower() == "close"
        c.close()
        assert not list((tmp_path / "ws").rglob("big.bin"))
        # with the token the same request goes through to the handler (here: a small body)
        r = requests.put(s.url + "/api/2.0/mlflow-artifacts/artifacts/0/small.bin", data=b"abc", timeout=30,
                         headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
    finally:
        s.stop()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_token(imops_bin, tmp_path, how, monkeypatch):
    args, env = (["--token", "s3cret"], None) if how == "flag" else ([], {"IMOPS_TOKEN": "s3cret"})
    s = Server(imops_bin, tmp_path / "ws", *args, env=env)
    try:
        r = s.api("POST", "mlflow/experiments/create", json={"name": "x"})
        assert r.status_code == 401 and err_of(r) == "UNAUTHENTICATED"
        r = s.api("POST", "mlflow/experiments/create", json={"name": "x"}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = requests.put(s.url + "/api/2.0/mlflow-artifacts/artifacts/0/x.txt", data=b"x", timeout=30)
        assert r.status_code == 401
        r = requests.delete(s.url + "/api/2.0/mlflow-artifacts/artifacts/0", timeout=30)
        assert r.status_code == 401
        # reads stay open
        r = s.api("GET", "mlflow/experiments/get", params={"experiment_id": "0"})
        assert r.status_code == 200 and r.json()["experiment"]["name"] == "Default"
        # the mlflow client with MLFLOW_TRACKING_TOKEN does everything
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cret")
        mlflow.set_tracking_uri(s.url)
        c = MlflowClient(s.url)
        eid = c.create_experiment("tok")
        rid = c.create_run(eid).info.run_id
        c.log_metric(rid, "m", 1.0)
        c.log_text(rid, "text", "t.txt")
        assert c.get_run(rid).data.metrics == {"m": 1.0}
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "wrong")
        with pytest.raises(MlflowException):
            c.log_metric(rid, "m", 2.0)
    finally:
        s.stop()

    s = Server(imops_bin, tmp_path / "ws-open")  # no token: writes are open (loopback default)
    try:
        assert s.api("POST", "mlflow/experiments/create", json={"name": "x"}).status_code == 200
    finally:
        s.stop()


# ---- concurrency --------------------------------------------------------------------------------

WORKER = r"""
import sys, time
from mlflow import MlflowClient
url, run_id, k, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
c = MlflowClient(url)
while time.time() < start:
    time.sleep(0.005)
for j in range(1000):
    c.log_metric(run_id, "shared", k * 1000 + j, timestamp=1_700_000_000_000 + j, step=k * 1000 + j)
"""


def test_four_processes_log_concurrently(server, client):
    rid = client.create_run("0", run_name="concurrent").info.run_id
    start = time.time() + 2.0
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, server.url, rid, str(k), str(start)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    hist = client.get_metric_history(rid, "shared")
    assert len(hist) == 4000
    assert sorted(int(m.step) for m in hist) == list(range(4000))
    assert sorted(m.value for m in hist) == [float(i) for i in range(4000)]
    assert client.get_run(rid).data.metrics["shared"] == 3999.0


# ---- shutdown -------------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_upload(imops_bin, tmp_path):
    s = Server(imops_bin, tmp_path / "ws")
    target = "/api/2.0/mlflow-artifacts/artifacts/0/drain/artifacts/w.bin"
    payload = os.urandom(1 << 20)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:
        sock.sendall(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                     + payload[:1000])
        time.sleep(0.2)
        os.kill(s.proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        assert s.proc.poll() is None  # still answering the request in flight
        with pytest.raises(ConnectionRefusedError):  # new connections are refused while draining
            socket.create_connection(("127.0.0.1", s.port), timeout=5).close()
        sock.sendall(payload[1000:])
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        sock.close()
    s.proc.wait(timeout=30)
    s.stop()  # exit status 0, clean sanitizer output
    assert (s.home / "artifacts" / "0" / "drain" / "artifacts" / "w.bin").read_bytes() == payload
