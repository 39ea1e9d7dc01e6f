"""S3 artifact stores against a real S3 implementation started here on
loopback (moto's server) with SigV4 signature checks on: uploads (single PUT
and multipart), paginated listings, downloads, a wrong secret rejected,
`imops server` with an s3:// artifacts destination used by the official
mlflow client, `imops train` into an experiment whose artifacts live in S3,
`imops test --model runs:/...` resolving from S3, and a killed upload that
leaves no visible object."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3", reason="moto[server] (tests/requirements.txt) is not installed")
pytest.importorskip("moto", reason="moto[server] (tests/requirements.txt) is not installed")
requests = pytest.importorskip("requests")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from test_mlflow_client import Server  # noqa: E402

BUCKET = "imops"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"{url}: the server exited {proc.returncode}"
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


# moto 5.0's server checks signatures against werkzeug's request.url, whose path
# and query are already percent-decoded ("prefix=a%2F" becomes "prefix=a/", the key
# "a%20b" becomes "a b"), so every correctly signed request with an escaped character
# fails, boto3's own included (ListObjectsV2 with Prefix="a/", PutObject of "a b").
# The launcher hands the check the request target as it was sent; everything else
# is moto as released.
MOTO_LAUNCHER = """
import sys
from urllib.parse import urlparse
import moto.core.responses as r
from moto.server import main
orig = r.ActionAuthenticatorMixin._authenticate_and_authorize_action
def check_raw_target(self, iam_request_cls, resource="*"):
    env = getattr(getattr(self, "request", None), "environ", None) or {}
    raw = env.get("RAW_URI") or env.get("REQUEST_URI")
    if not raw:
        return orig(self, iam_request_cls, resource)
    saved = self.uri
    u = urlparse(saved)
    self.uri = u.scheme + "://" + u.netloc + raw
    try:
        return orig(self, iam_request_cls, resource)
    finally:
        self.uri = saved
r.ActionAuthenticatorMixin._authenticate_and_authorize_action = check_raw_target
sys.exit(main(sys.argv[1:]))
"""


class Moto:
    def __init__(self, tmp):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "moto.log", "wb")
        env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1")
        self.proc = subprocess.Popen([sys.executable, "-c", MOTO_LAUNCHER, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_http(self.url + "/moto-api/", self.proc)
        # Before auth is on: an IAM user with a key allowed everything, and the bucket.
        boot = dict(endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="bootstrap",
                    aws_secret_access_key="bootstrap")
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="imops")
        key = iam.create_access_key(UserName="imops")["AccessKey"]
        iam.put_user_policy(UserName="imops", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        self.key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.client().create_bucket(Bucket=BUCKET)
        # From now on every request must carry a valid SigV4 signature of that key
        # (moto's INITIAL_NO_AUTH_ACTION_COUNT, set to 0).
        r = requests.post(self.url + "/moto-api/reset-auth", data=b"0", timeout=10)
        assert r.status_code == 200, r.text

    def client(self, secret=None, endpoint=None):
        return boto3.client("s3", endpoint_url=endpoint or self.url, region_name="us-east-1",
                            aws_access_key_id=self.key, aws_secret_access_key=secret or self.secret,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def env(self, endpoint=None, secret=None, **extra):
        e = {"MLFLOW_S3_ENDPOINT_URL": endpoint or self.url, "AWS_ACCESS_KEY_ID": self.key,
             "AWS_SECRET_ACCESS_KEY": secret or self.secret, "AWS_DEFAULT_REGION": "us-east-1"}
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def keys(self, prefix):
        out, token = [], None
        for _ in range(100):
            kw = {"Bucket": BUCKET, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = self.client().list_objects_v2(**kw)
            out += [c["Key"] for c in r.get("Contents", [])]
            token = r.get("NextContinuationToken")
            if not r.get("IsTruncated"):
                break
        return out

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto"))
    yield m
    m.stop()


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_signatures_are_checked(imops, s3, tmp_path):
    bad = s3.client(secret="not-the-secret")
    with pytest.raises(ClientError) as e:
        bad.list_objects_v2(Bucket=BUCKET)
    assert e.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")
    f = tmp_path / "a b+c.txt"
    f.write_text("hello s3\n")
    p = imops.run("artifacts", "upload", f, f"s3://{BUCKET}/sig/a b+c.txt", check=False,
                  env=s3.env(secret="not-the-secret"))
    assert p.returncode == 1 and "403" in p.stderr, p.stderr
    assert s3.keys("sig/") == []
    # The right key: signed requests with a key that needs escaping in the path.
    imops.run("artifacts", "upload", f, f"s3://{BUCKET}/sig/a b+c.txt", env=s3.env())
    assert s3.client().get_object(Bucket=BUCKET, Key="sig/a b+c.txt")["Body"].read() == b"hello s3\n"
    ls = imops.json("artifacts", "list", f"s3://{BUCKET}/sig", env=s3.env())
    assert ls["files"] == [{"path": "a b+c.txt", "is_dir": False, "file_size": 9}]


def test_multipart_pagination_download(imops, s3, tmp_path):
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    (d / "small.txt").write_text("x")
    big = d / "sub" / "big.bin"
    big.write_bytes(os.urandom(12 << 20))
    env = s3.env(IMOPS_S3_MULTIPART_MB=5, IMOPS_S3_PART_MB=5)
    imops.run("artifacts", "upload", d, f"s3://{BUCKET}/mp", env=env)
    head = s3.client().head_object(Bucket=BUCKET, Key="mp/sub/big.bin")
    assert head["ContentLength"] == 12 << 20
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # three parts
    assert s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    ls = imops.json("artifacts", "list", f"s3://{BUCKET}/mp", env=env)
    assert [(f["path"], f["is_dir"]) for f in ls["files"]] == [("small.txt", False), ("sub", True)]
    # download through the cache: the whole tree, byte for byte
    home = tmp_path / "ws"
    out = imops.json("artifacts", "download", f"s3://{BUCKET}/mp", env=dict(env, IMOPS_HOME=str(home)))
    local = Path(out["local_path"])
    assert str(local).startswith(str(home / "cache")) and sha(local / "sub" / "big.bin") == sha(big)
    assert (local / "small.txt").read_text() == "x"

    # more than one ListObjectsV2 page (1000 keys per page)
    c = s3.client()
    names = [f"many/k{i:05d}" for i in range(1003)]
    lock = threading.Lock()
    todo = list(names)

    def put():
        cl = s3.client()
        while True:
            with lock:
                if not todo:
                    return
                k = todo.pop()
            cl.put_object(Bucket=BUCKET, Key=k, Body=b"1")

    ts = [threading.Thread(target=put) for _ in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert len(c.list_objects_v2(Bucket=BUCKET, Prefix="many/")["Contents"]) == 1000
    ls = imops.json("artifacts", "list", f"s3://{BUCKET}/many", env=env)
    assert sorted(f["path"] for f in ls["files"]) == [n.split("/")[1] for n in names]


def test_server_with_s3_destination_and_mlflow_client(imops_bin, s3, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    srv = Server(imops_bin, tmp_path / "ws", "--artifacts-destination", f"s3://{BUCKET}/mlartifacts",
                 env=s3.env())
    try:
        mlflow.set_tracking_uri(srv.url)
        client = MlflowClient(srv.url)
        exp = client.create_experiment("s3-proxy")
        run = client.create_run(exp)
        rid = run.info.run_id
        assert run.info.artifact_uri == f"mlflow-artifacts:/{exp}/{rid}/artifacts"
        f = tmp_path / "notes.txt"
        f.write_text("proxied to S3\n")
        d = tmp_path / "model"
        (d / "data").mkdir(parents=True)
        (d / "MLmodel").write_text("flavors: {}\n")
        (d / "data" / "w.bin").write_bytes(os.urandom(300000))
        client.log_artifact(rid, str(f))
        client.log_artifacts(rid, str(d), "model")
        keys = s3.keys(f"mlartifacts/{exp}/{rid}/artifacts/")
        assert sorted(k.split("/artifacts/")[1] for k in keys) == ["model/MLmodel", "model/data/w.bin", "notes.txt"]
        top = client.list_artifacts(rid)
        assert [(a.path, a.is_dir) for a in top] == [("model", True), ("notes.txt", False)]
        assert [(a.path, a.file_size) for a in client.list_artifacts(rid, "model/data")] == [("model/data/w.bin", 300000)]
        dst = tmp_path / "dl"
        dst.mkdir()
        got = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="model", dst_path=str(dst))
        assert sha(Path(got) / "data" / "w.bin") == sha(d / "data" / "w.bin")
        assert (Path(got) / "MLmodel").read_text() == "flavors: {}\n"
        # a missing artifact is a 404, path traversal a 400
        r = requests.get(f"{srv.url}/api/2.0/mlflow-artifacts/artifacts/{exp}/{rid}/artifacts/nope.txt", timeout=30)
        assert r.status_code == 404
        r = requests.put(f"{srv.url}/api/2.0/mlflow-artifacts/artifacts/{exp}/../../x", data=b"x", timeout=30)
        assert r.status_code in (400, 404)
        client.set_terminated(rid)
    finally:
        srv.stop()


def test_server_default_artifact_root_s3(imops_bin, s3, tmp_path, monkeypatch):
    """--default-artifact-root s3://...: clients write to S3 themselves (boto3 in the
    mlflow client), and the server lists the run's artifacts from S3."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    srv = Server(imops_bin, tmp_path / "ws", "--default-artifact-root", f"s3://{BUCKET}/direct", env=s3.env())
    try:
        client = MlflowClient(srv.url)
        exp = client.create_experiment("direct")
        assert client.get_experiment(exp).artifact_location == f"s3://{BUCKET}/direct/{exp}"
        rid = client.create_run(exp).info.run_id
        f = tmp_path / "direct.txt"
        f.write_text("straight to S3\n")
        client.log_artifact(rid, str(f), "sub")
        assert s3.keys(f"direct/{exp}/{rid}/artifacts/") == [f"direct/{exp}/{rid}/artifacts/sub/direct.txt"]
        r = srv.api("GET", "mlflow/artifacts/list", params={"run_id": rid, "path": "sub"})
        assert r.status_code == 200, r.text
        assert r.json()["files"] == [{"path": "sub/direct.txt", "is_dir": False, "file_size": 15}]
        assert r.json()["root_uri"] == f"s3://{BUCKET}/direct/{exp}/{rid}/artifacts"
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def tiny_data(imops, tmp_path_factory):
    data = tmp_path_factory.mktemp("s3data") / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 120, "--size", 64, "--seed", 5, "--no-sheet")
    imops.run("preprocess", "--data", data, "--img-size", 32)
    return data


def test_train_into_s3_and_test_from_s3(imops, s3, tiny_data, tmp_path):
    home = tmp_path / "ws"
    env = s3.env(IMOPS_HOME=home)
    imops.run("experiments", "create", "s3exp", "--artifact-location", f"s3://{BUCKET}/experiments/s3exp", env=env)
    r = imops.json("train", "--data", tiny_data, "--model", "smallcnn", "--epochs", 1, "--batch-size", 16,
                   "--experiment", "s3exp", "--output", tmp_path / "out", env=env, timeout=900)
    rid = r["run_id"]
    keys = s3.keys(f"experiments/s3exp/{rid}/artifacts/")
    rel = sorted(k.split("/artifacts/", 1)[1] for k in keys)
    assert "model/MLmodel" in rel and "model/model.safetensors" in rel and "plots/training_curves.svg" in rel, rel
    local = tmp_path / "out" / "model" / "model.safetensors"
    remote = s3.client().get_object(Bucket=BUCKET, Key=f"experiments/s3exp/{rid}/artifacts/model/model.safetensors")
    assert hashlib.sha256(remote["Body"].read()).hexdigest() == sha(local)

    # runs:/ resolves through the store to S3 and lands in the cache, whole
    t = imops.json("test", "--model", f"runs:/{rid}/model", "--data", tiny_data, env=env)
    assert t["run_id"] == rid
    cached = list((home / "cache" / "artifacts").glob("*/model/model.safetensors"))
    assert len(cached) == 1 and sha(cached[0]) == sha(local)
    assert not list((home / "cache" / "artifacts").glob("*/*.tmp-*"))
    keys = s3.keys(f"experiments/s3exp/{rid}/artifacts/")
    assert any(k.endswith("plots/confusion_matrix.svg") for k in keys)  # the test run's plot went to S3 too
    # an s3:// model URI directly, and registry URIs whose version lives in S3
    t2 = imops.json("test", "--model", f"s3://{BUCKET}/experiments/s3exp/{rid}/artifacts/model", "--data", tiny_data,
                    "--no-track", env=env)
    assert t2["accuracy"] == t["accuracy"]
    imops.run("models", "register", rid, "s3model", env=env)
    t3 = imops.json("test", "--model", "models:/s3model/1", "--data", tiny_data, "--no-track", env=env)
    assert t3["accuracy"] == t["accuracy"]


class SlowProxy:
    """A TCP proxy to moto that forwards the client's bytes at a limited rate
    and counts them, so a test can kill an upload in the middle."""

    def __init__(self, target_port, rate=4 << 20):
        self.target, self.rate, self.sent, self.stop_flag = target_port, rate, 0, False
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop_flag:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, False), daemon=True).start()

    def pump(self, a, b, slow):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
                if slow:
                    self.sent += len(data)
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop_flag = True
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("multipart", [False, True])
def test_killed_upload_leaves_no_object(imops_bin, s3, tmp_path, multipart):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 << 20))
    proxy = SlowProxy(s3.port)
    key = f"killed/{'mp' if multipart else 'put'}/big.bin"
    extra = {"IMOPS_S3_MULTIPART_MB": 5, "IMOPS_S3_PART_MB": 5} if multipart else {}
    env = dict(os.environ, **s3.env(endpoint=f"http://127.0.0.1:{proxy.port}", **extra))
    p = subprocess.Popen([imops_bin, "artifacts", "upload", str(big), f"s3://{BUCKET}/{key}"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while proxy.sent < (12 << 20) and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert p.poll() is None, f"the upload ended before it could be killed: {p.communicate()}"
        assert proxy.sent >= 12 << 20
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        proxy.close()
    c = s3.client()
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=BUCKET, Key=key)
    assert e.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    assert s3.keys("killed/") == []
    if multipart:  # parts went up, but an unfinished multipart upload is no object
        ups = c.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        assert [u["Key"] for u in ups] == [key]
