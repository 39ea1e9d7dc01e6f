"""imops serve end to end: a tiny surface model trained in seconds, served on a
free loopback port and called the ways its users call it: multipart uploads as
the seed's `requests.post(url, files=...)`, raw and JSON bodies, the official
Open Inference Protocol v2 client (tritonclient) with FP32 and BYTES inputs in
JSON and binary form, the docs page and OpenAPI document, `imops predict
--url`; predictions equal local `imops predict`; every kind of bad request
gets a 4xx JSON error and the server goes on; concurrent requests are batched
(imops_batch_size); an alias move under load reloads with zero failed
requests; SIGTERM drains an in-flight request and exits 0."""
import base64
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.http as tritonclient_http  # pinned in tests/requirements.txt

from serve_helpers import server, ws  # noqa: F401  (fixtures shared with test_serve_docs.py)


def sample(text, metric, **labels):
    """The value of one sample in a Prometheus exposition (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(metric):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != metric:
            continue
        got = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def local_predictions(imops, ws, files, uri="models:/surface@production"):
    out = imops.json("predict", "--model", uri, *files, env=ws["env"])
    return out["predictions"]


def assert_same(remote, local):
    assert remote["class"] == local["class"] and remote["label"] == local["label"]
    for k, v in local["probabilities"].items():
        assert abs(remote["probabilities"][k] - v) < 1e-5


def test_predict_routes_match_local(imops, ws, server):
    s = server()
    imgs = ws["images"]
    local = local_predictions(imops, ws, imgs)
    # the seed's way: requests.post(url, files={...})
    with open(imgs[0], "rb") as f:
        r = requests.post(s.url + "/predict", files={"file": f}, timeout=30)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == "surface" and j["version"] == "1"
    assert len(j["predictions"]) == 1 and j["predictions"][0]["file"] == imgs[0].name
    assert_same(j["predictions"][0], local[0])
    # several files in one multipart body, plus a plain form field that is ignored
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in imgs]
    r = requests.post(s.url + "/predict", files=files, data={"note": "hello"}, timeout=30)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == [p.name for p in imgs]
    for got, want in zip(preds, local):
        assert_same(got, want)
    # the compact form the seed's BentoML service answered
    r = requests.post(s.url + "/predict?format=classes", files=files, timeout=30)
    assert r.status_code == 200 and r.json() == [p["class"] for p in local]
    # a raw image body
    r = requests.post(s.url + "/predict", data=imgs[1].read_bytes(), headers={"Content-Type": "image/jpeg"},
                      timeout=30)
    assert r.status_code == 200, r.text
    assert_same(r.json()["predictions"][0], local[1])
    # JSON with base64 images, both shapes
    b64 = [base64.b64encode(p.read_bytes()).decode() for p in imgs[:3]]
    r = requests.post(s.url + "/predict", json={"instances": [{"b64": b64[0]}, {"b64": b64[1]}]}, timeout=30)
    assert r.status_code == 200, r.text
    for got, want in zip(r.json()["predictions"], local[:2]):
        assert_same(got, want)
    r = requests.post(s.url + "/predict", json={"images": b64}, timeout=30)
    assert [p["class"] for p in r.json()["predictions"]] == [p["class"] for p in local[:3]]
    # the client mode of imops predict prints what local prediction prints
    remote = imops.json("predict", "--url", s.url, *imgs, env=ws["env"])
    assert [p["file"] for p in remote["predictions"]] == [str(p) for p in imgs]
    for got, want in zip(remote["predictions"], local):
        assert_same(got, want)
    txt_local = imops.run("predict", "--model", "models:/surface@production", imgs[0], env=ws["env"]).stdout
    txt_remote = imops.run("predict", "--url", s.url, imgs[0]).stdout
    assert txt_local == txt_remote
    bad = imops.run("predict", "--url", s.url, ws["root"] / "missing.jpg", check=False)
    assert bad.returncode == 1
    # predictions are counted by class in /metrics
    m = s.metrics()
    total = sum(sample(m, "imops_predictions_total", **{"class": c}) or 0 for c in ("Negative", "Positive"))
    assert total >= 8 + 8 + 8 + 1 + 2 + 3
    assert sample(m, "imops_http_requests_total", route="/predict", method="POST", code="200") >= 6


def test_v2_with_tritonclient(ws, server):
    s = server()
    c = tritonclient_http.InferenceServerClient(f"127.0.0.1:{s.port}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("surface")
    assert c.is_model_ready("surface", "1") and not c.is_model_ready("nope")
    meta = c.get_server_metadata()
    assert meta["name"] == "imops" and "binary_tensor_data" in meta["extensions"]
    mm = c.get_model_metadata("surface")
    assert mm["name"] == "surface" and mm["versions"] == ["1"]
    inp = {i["name"]: i for i in mm["inputs"]}
    assert inp["input"]["datatype"] == "FP32" and inp["input"]["shape"] == [-1, 3, 32, 32]
    assert inp["image"]["datatype"] == "BYTES"
    with pytest.raises(Exception, match="404|unknown|version"):
        c.get_model_metadata("surface", "9")
    imgs = ws["images"]
    # BYTES, binary (the client's default), outputs chosen by the server (binary, as the client asks)
    data = np.array([p.read_bytes() for p in imgs], dtype=np.object_)
    x = tritonclient_http.InferInput("image", [len(imgs)], "BYTES")
    x.set_data_from_numpy(data)
    r = c.infer("surface", [x])
    probs = r.as_numpy("probabilities")
    assert probs.shape == (len(imgs), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    classes = r.as_numpy("class")
    assert list(classes) == list(probs.argmax(1))
    assert [b.decode() for b in r.as_numpy("label")] == [["Negative", "Positive"][k] for k in classes]
    # BYTES in JSON (base64 strings), JSON outputs, with a version and a request id
    x = tritonclient_http.InferInput("image", [len(imgs)], "BYTES")
    x.set_data_from_numpy(np.array([base64.b64encode(p.read_bytes()) for p in imgs], dtype=np.object_),
                          binary_data=False)
    r2 = c.infer("surface", [x], model_version="1", request_id="req-7",
                 outputs=[tritonclient_http.InferRequestedOutput("probabilities", binary_data=False)])
    assert r2.get_response()["id"] == "req-7" and r2.get_response()["model_version"] == "1"
    assert np.allclose(r2.as_numpy("probabilities"), probs, atol=1e-6)
    # the classification extension
    r3 = c.infer("surface", [x], outputs=[tritonclient_http.InferRequestedOutput("probabilities", class_count=1)])
    top = [e.decode().split(":") for e in r3.as_numpy("probabilities").reshape(-1)]
    assert [int(t[1]) for t in top] == list(classes) and [t[2] for t in top] == [["Negative", "Positive"][k] for k in classes]
    # FP32 tensors: binary and JSON give the same answer, which agrees with the probabilities output
    t = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    outs = []
    for binary in (True, False):
        x = tritonclient_http.InferInput("input", list(t.shape), "FP32")
        x.set_data_from_numpy(t, binary_data=binary)
        r = c.infer("surface", [x], outputs=[tritonclient_http.InferRequestedOutput("probabilities", binary_data=binary),
                                             tritonclient_http.InferRequestedOutput("class", binary_data=binary)])
        outs.append((r.as_numpy("probabilities"), r.as_numpy("class")))
    assert np.allclose(outs[0][0], outs[1][0], atol=1e-6) and list(outs[0][1]) == list(outs[1][1])
    assert list(outs[0][1]) == list(outs[0][0].argmax(1))
    # compressed requests and responses (the client's gzip and deflate options)
    for algo in ("gzip", "deflate"):
        x = tritonclient_http.InferInput("input", list(t.shape), "FP32")
        x.set_data_from_numpy(t)
        r = c.infer("surface", [x], request_compression_algorithm=algo, response_compression_algorithm=algo)
        assert np.allclose(r.as_numpy("probabilities"), outs[0][0], atol=1e-6)
    # client-side errors come back as 4xx with the server's message
    bad = tritonclient_http.InferInput("input", [1, 3, 31, 32], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 31, 32), np.float32))
    with pytest.raises(Exception, match="shape"):
        c.infer("surface", [bad])
    with pytest.raises(Exception, match="unknown model"):
        c.infer("nope", [x])
    c.close()


def test_docs_and_openapi(server):
    s = server()
    r = requests.get(s.url + "/docs", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    page = r.text
    assert "<form" in page and 'type="file"' in page and "/predict" in page and "FormData" in page
    assert "<script src" not in page and "https://" not in page  # self-contained: no internet
    doc = requests.get(s.url + "/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.")
    for path, method in [("/predict", "post"), ("/healthz", "get"), ("/livez", "get"), ("/readyz", "get"),
                         ("/metrics", "get"), ("/docs", "get"), ("/v2", "get"), ("/v2/health/live", "get"),
                         ("/v2/health/ready", "get"), ("/v2/models/{name}", "get"), ("/v2/models/{name}/ready", "get"),
                         ("/v2/models/{name}/infer", "post"), ("/v2/models/{name}/versions/{version}/infer", "post")]:
        assert method in doc["paths"][path], path
    try:
        from openapi_spec_validator import validate
    except ImportError:
        validate = None
    if validate:
        validate(doc)
    for p in ("/healthz", "/livez", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert requests.get(s.url + p, timeout=30).status_code == 200


def truncated_jpeg(path):
    b = path.read_bytes()
    return b[:len(b) // 2]


def test_bad_requests_get_4xx_and_the_server_goes_on(ws, server, tmp_path):
    s = server("--max-body-mb", 1, "--max-pixels", 10000, "--max-images", 4)
    img = ws["images"][0].read_bytes()
    from PIL import Image
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(big)
    v2h = {"Content-Type": "application/json"}
    infer = s.url + "/v2/models/surface/infer"
    good_in = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}
    cases = [
        ("wrong content type", "POST", "/predict", {"Content-Type": "text/plain"}, b"hello", 415),
        ("no content type", "POST", "/predict", {}, img, 415),
        ("corrupt image", "POST", "/predict", {"Content-Type": "image/jpeg"}, b"\xff\xd8\xff\xe0" + b"\x00" * 200, 400),
        ("truncated image", "POST", "/predict", {"Content-Type": "image/jpeg"}, truncated_jpeg(ws["images"][0]), 400),
        ("not an image", "POST", "/predict", {"Content-Type": "image/png"}, b"GIF89a....", 400),
        ("empty body", "POST", "/predict", {"Content-Type": "image/jpeg"}, b"", 400),
        ("empty multipart", "POST", "/predict", {"Content-Type": "multipart/form-data; boundary=xx"},
         b"--xx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--xx--\r\n", 400),
        ("multipart without boundary", "POST", "/predict", {"Content-Type": "multipart/form-data"}, b"--x--", 400),
        ("malformed multipart", "POST", "/predict", {"Content-Type": "multipart/form-data; boundary=xx"},
         b"--xx\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.jpg\"\r\n\r\nabc", 400),
        ("bad JSON", "POST", "/predict", {"Content-Type": "application/json"}, b"{\"instances\": [", 400),
        ("JSON without images", "POST", "/predict", {"Content-Type": "application/json"}, b"{\"x\": 1}", 400),
        ("bad base64", "POST", "/predict", {"Content-Type": "application/json"}, b"{\"images\": [\"$$$\"]}", 400),
        ("bad format", "POST", "/predict?format=xml", {"Content-Type": "image/jpeg"}, img, 400),
        ("image over the pixel limit", "POST", "/predict", {"Content-Type": "image/png"}, big.read_bytes(), 413),
        ("too many images", "POST", "/predict", {"Content-Type": "application/json"},
         json.dumps({"images": [base64.b64encode(img).decode()] * 5}).encode(), 413),
        ("body over the limit", "POST", "/predict", {"Content-Type": "image/jpeg"}, b"\xff" * (2 << 20), 413),
        ("v2 bad JSON", "POST", "/v2/models/surface/infer", v2h, b"{nope", 400),
        ("v2 no inputs", "POST", "/v2/models/surface/infer", v2h, b"{\"inputs\": []}", 400),
        ("v2 wrong shape", "POST", "/v2/models/surface/infer", v2h,
         json.dumps({"inputs": [dict(good_in, shape=[1, 3, 16, 64])]}).encode(), 400),
        ("v2 data and shape disagree", "POST", "/v2/models/surface/infer", v2h,
         json.dumps({"inputs": [dict(good_in, data=[0.0] * 10)]}).encode(), 400),
        ("v2 wrong datatype", "POST", "/v2/models/surface/infer", v2h,
         json.dumps({"inputs": [dict(good_in, datatype="INT8")]}).encode(), 400),
        ("v2 unknown output", "POST", "/v2/models/surface/infer", v2h,
         json.dumps({"inputs": [good_in], "outputs": [{"name": "nope"}]}).encode(), 400),
        ("v2 corrupt BYTES image", "POST", "/v2/models/surface/infer", v2h,
         json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                 "data": [base64.b64encode(b"\xff\xd8\xff" + b"\x01" * 50).decode()]}]}).encode(), 400),
        ("v2 header length past the body", "POST", "/v2/models/surface/infer",
         dict(v2h, **{"Inference-Header-Content-Length": "99999"}), b"{}", 400),
        ("v2 corrupt gzip", "POST", "/v2/models/surface/infer", dict(v2h, **{"Content-Encoding": "gzip"}),
         b"\x1f\x8b\x08\x00garbage", 400),
        ("v2 unknown encoding", "POST", "/v2/models/surface/infer", dict(v2h, **{"Content-Encoding": "br"}),
         b"{}", 415),
        ("v2 unknown model", "POST", "/v2/models/nope/infer", v2h, json.dumps({"inputs": [good_in]}).encode(), 404),
        ("v2 unknown version", "POST", "/v2/models/surface/versions/7/infer", v2h,
         json.dumps({"inputs": [good_in]}).encode(), 404),
        ("v2 unknown model metadata", "GET", "/v2/models/nope", {}, b"", 404),
        ("unknown route", "GET", "/nope", {}, b"", 404),
    ]
    for what, method, path, headers, body, want in cases:
        r = requests.request(method, s.url + path, headers=headers, data=body, timeout=30)
        assert r.status_code == want, f"{what}: {r.status_code} {r.text}"
        j = r.json()
        msg = j.get("error")  # one shape for every error, the HTTP layer's own 413 included
        assert isinstance(msg, str) and msg and set(j) == {"error"}, f"{what}: {j}"
        assert requests.get(s.url + "/healthz", timeout=30).status_code == 200, what
    # and a good request still works, in both protocols
    assert requests.post(s.url + "/predict", data=img, headers={"Content-Type": "image/jpeg"}, timeout=30).ok
    assert requests.post(infer, json={"inputs": [good_in]}, timeout=30).ok
    m = s.metrics()
    assert sample(m, "imops_http_requests_total", route="/predict", method="POST", code="415") == 2
    assert sample(m, "imops_http_requests_total", route="unmatched", method="GET", code="404") == 1


def hammer(url, files, n_threads, per_thread, stop=None, results=None, timed=None):
    """n_threads clients posting per_thread requests each (or until stop is set). results gets
    (status, version or error text) in the order the answers were taken; timed, when given, also
    (time sent, time answered, version) on the monotonic clock."""
    results = results if results is not None else []
    lock = threading.Lock()

    def work(i):
        sess = requests.Session()
        k = 0
        while (stop is None and k < per_thread) or (stop is not None and not stop.is_set() and k < 100000):
            f = files[(i + k) % len(files)]
            body = f.read_bytes()
            t0 = time.monotonic()
            try:
                r = sess.post(url + "/predict", files={"file": (f.name, body, "image/jpeg")}, timeout=60)
                out = (r.status_code, r.json().get("version") if r.status_code == 200 else r.text)
            except Exception as e:  # noqa: BLE001 - a failure is what the test counts
                out = (0, repr(e))
            t1 = time.monotonic()
            with lock:
                results.append(out)
                if timed is not None:
                    timed.append((t0, t1, out[1]))
            k += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    return threads, results


def test_concurrent_requests_are_batched(ws, server):
    s = server("--max-batch-size", 16, "--max-latency-ms", 20)
    threads, results = hammer(s.url, ws["images"], 24, 6)
    for t in threads:
        t.join()
    assert len(results) == 144 and all(code == 200 for code, _ in results), results[:5]
    m = s.metrics()
    count = sample(m, "imops_batch_size_count")
    singles = sample(m, "imops_batch_size_bucket", le="1")
    assert sample(m, "imops_batch_size_sum") == 144
    assert count < 144 and singles < count, f"no batch held more than one image: {count} batches"
    assert sample(m, "imops_inference_duration_seconds_count") == count
    assert sample(m, "imops_queue_depth") == 0
    # the drift gauges and model description are there
    for ch in ("R", "G", "B"):
        mean = sample(m, "imops_input_channel_mean", channel=ch)
        assert 0 < mean < 1 and sample(m, "imops_input_channel_std", channel=ch) > 0
        assert 0 < sample(m, "imops_train_channel_mean", channel=ch) < 1
        assert sample(m, "imops_input_drift_score", channel=ch) >= 0
    assert sample(m, "imops_prediction_class_psi") >= 0
    assert sample(m, "imops_model_info", name="surface", version="1") == 1
    assert sample(m, "imops_model_ready") == 1
    assert sample(m, "process_resident_memory_bytes") > 0 and sample(m, "imops_build_info") == 1
    assert sample(m, "imops_prediction_confidence_count") == 144
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=m, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr


def test_no_batching_runs_requests_alone(ws, server):
    s = server("--no-batching")
    threads, results = hammer(s.url, ws["images"], 8, 4)
    for t in threads:
        t.join()
    assert all(code == 200 for code, _ in results)
    m = s.metrics()
    assert sample(m, "imops_batch_size_bucket", le="1") == sample(m, "imops_batch_size_count") == 32


def test_alias_move_under_load_reloads_without_failures(imops, ws, server):
    s = server("--watch", "--watch-interval", 0.2)
    stop = threading.Event()
    timed = []
    threads, results = hammer(s.url, ws["images"], 6, 0, stop=stop, timed=timed)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(results) < 20:
            time.sleep(0.05)
        imops.run("models", "alias", "surface", "production", "2", env=ws["env"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == "2" for _, v in results[-10:]):
            time.sleep(0.05)
        n_after = len(results)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(results) < n_after + 20:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    versions = [v for _, v in results]
    assert "1" in versions and versions[-1] == "2"
    # no going back once switched: no request sent after an answer from version 2 came back
    # gets version 1 (judged by when each was sent and answered, not by the order the client
    # threads got to record them, which a stalled thread can delay)
    first2_answered = min(t1 for _, t1, v in timed if v == "2")
    late1 = [(t0, v) for t0, _, v in timed if v == "1" and t0 > first2_answered]
    assert not late1, f"{len(late1)} requests sent after version 2 answered got version 1"
    m = s.metrics()
    assert sample(m, "imops_model_reloads_total") == 1
    assert sample(m, "imops_model_info", version="2") == 1 and sample(m, "imops_model_info", version="1") is None
    # the new version answers as local prediction with it does
    local = local_predictions(imops, ws, ws["images"][:2], uri="models:/surface/2")
    with open(ws["images"][0], "rb") as f:
        assert_same(requests.post(s.url + "/predict", files={"file": f}, timeout=30).json()["predictions"][0], local[0])
    # SIGHUP reloads too
    s.p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sample(s.metrics(), "imops_model_reloads_total") < 2:
        time.sleep(0.05)
    assert sample(s.metrics(), "imops_model_reloads_total") == 2
    imops.run("models", "alias", "surface", "production", "1", env=ws["env"])


def test_sigterm_drains_in_flight_requests(ws, server):
    s = server()
    img = ws["images"][0].read_bytes()
    # a request whose headers the server has taken (it answered 100 Continue) but whose body
    # is still on its way when SIGTERM arrives
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                 b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(img))
    cont = sock.recv(1024)
    assert cont.startswith(b"HTTP/1.1 100"), cont
    s.p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    refused = False
    while time.monotonic() < deadline and not refused:  # new connections are refused while it drains
        try:
            socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
            time.sleep(0.02)
        except OSError:
            refused = True
    assert refused
    assert s.p.poll() is None  # still draining
    sock.sendall(img)
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = sock.recv(65536)
        assert chunk, resp
        resp += chunk
    head, body = resp.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    sock.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
    body = json.loads(body)
    assert body["predictions"][0]["label"] in ("Negative", "Positive")
    assert s.p.wait(timeout=60) == 0


def test_connection_limit(server):
    s = server("--max-connections", 2)
    held = []
    for _ in range(2):  # two keep-alive connections that the server has answered once
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        held.append(sock)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(s.url + "/livez", timeout=30)
    for sock in held:
        sock.close()
    ok = False
    for _ in range(200):  # the slots free up once the server sees the connections close
        try:
            ok = requests.get(s.url + "/livez", timeout=30).status_code == 200
            break
        except requests.exceptions.ConnectionError:
            time.sleep(0.05)
    assert ok
