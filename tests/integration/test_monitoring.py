"""Monitoring and deployment files against the real tools: promtool checks the
alert rules (and their unit tests), the Prometheus config and the live /metrics
of `imops serve` and `imops train --metrics-port`; a real Prometheus (Debian's)
scrapes `imops serve` on loopback and its HTTP API returns the request, latency
and drift series and evaluates every dashboard and alert expression; every
metric a Grafana panel names is one imops exports; the Kubernetes probes name
routes the server answers."""
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
need_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")
need_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus (Debian's) is not installed")

METRICS_TRAIN = {"imops_train_epoch", "imops_train_step", "imops_train_loss", "imops_train_accuracy",
                 "imops_train_images_per_second", "imops_train_learning_rate", "imops_train_images_total",
                 "imops_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes"}
METRICS_SERVE = {"imops_http_requests_total", "imops_http_request_duration_seconds", "imops_inference_duration_seconds",
                 "imops_batch_size", "imops_queue_depth", "imops_inflight_requests", "imops_predictions_total",
                 "imops_prediction_confidence", "imops_input_channel_mean", "imops_input_channel_std",
                 "imops_train_channel_mean", "imops_train_channel_std", "imops_input_drift_score",
                 "imops_prediction_class_psi", "imops_model_info", "imops_model_ready", "imops_model_reloads_total",
                 "imops_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds", "process_threads"}


# ---- helpers --------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, fn, timeout=60.0, proc=None, log=None):
    """Calls fn until it returns something truthy (bounded); fails with what and the log."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited {proc.returncode}\n{log.read_text() if log else ''}")
        try:
            v = fn()
            if v:
                return v
        except (requests.RequestException, ValueError, KeyError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})\n{log.read_text() if log else ''}")


def stop(proc, sig=signal.SIGTERM, timeout=30):
    """Stops a process we started, by its PID."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def parse_exposition(text):
    """{family: type} from the # TYPE lines, and [(name, {labels}, value)] of the samples."""
    types, samples = {}, []
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ
        elif line and not line.startswith("#"):
            m = sample.match(line)
            assert m, f"unparsable sample line {line!r}"
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    return types, samples


def exported_names(types):
    """Every sample name a scrape of these families can produce."""
    names = set()
    for name, typ in types.items():
        names.add(name)
        if typ == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif typ == "summary":
            names |= {name + "_sum", name + "_count"}
    return names


def value(samples, metric, **labels):
    vals = [v for n, lb, v in samples if n == metric and all(lb.get(k) == x for k, x in labels.items())]
    assert vals, f"no sample {metric}{labels}"
    return vals[0]


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan", "Inf", "NaN"}


def promql_metric_names(expr):
    """The metric names a PromQL expression selects (labels, ranges, strings, groupings and functions removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0) in PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def dashboard_queries(dash):
    """(where, expr) of every panel target (rows' nested panels too) and every query variable."""
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))
    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
            assert m, f"variable {v['name']}: only label_values(metric, label) queries are expected, got {q!r}"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def grafana_to_promql(expr):
    """A Grafana panel query as Prometheus evaluates it (the dashboard variables at their 'All' values)."""
    for var, val in (("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "5m")):
        expr = expr.replace(var, val)
    return re.sub(r"\$\w+", ".*", expr)


def promtool(*args, stdin=None):
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=120)


# ---- a tiny model in a registry, and `imops serve` --------------------------------------------

@pytest.fixture(scope="module")
def workspace(imops, tmp_path_factory):
    """A few-second model: 200 generated images at 32x32, one epoch, registered as models:/surface@production."""
    root = tmp_path_factory.mktemp("monitoring")
    data, ws = root / "surface", root / "ws"
    env = {"IMOPS_HOME": str(ws)}
    imops.run("datagen", "surface", "--out", data, "--count", 200, "--size", 64, "--seed", 5, "--no-sheet")
    r = imops.json("train", "--data", data, "--img-size", 32, "--epochs", 1, "--batch-size", 32,
                   "--optimizer", "adam", "--lr", 0.003, "--weight-decay", 0, "--output", root / "out", env=env)
    imops.run("models", "register", r["run_id"], "surface", env=env)
    imops.run("models", "alias", "surface", "production", "1", env=env)
    return {"root": root, "data": data, "ws": ws, "run_id": r["run_id"], "n_train": r["n_train"]}


@pytest.fixture(scope="module")
def serve(imops_bin, workspace):
    port = free_port()
    log = workspace["root"] / "serve.log"
    env = dict(os.environ, IMOPS_HOME=str(workspace["ws"]))
    with open(log, "wb") as f:
        proc = subprocess.Popen([imops_bin, "serve", "models:/surface@production", "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=f, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("imops serve /readyz", lambda: requests.get(url + "/readyz", timeout=5).status_code == 200,
                 timeout=120, proc=proc, log=log)
        yield {"url": url, "port": port, "proc": proc, "log": log}
    finally:
        stop(proc)


def images(workspace, n):
    files = sorted((workspace["data"] / "Positive").glob("*.jpg"))[:n // 2] + \
        sorted((workspace["data"] / "Negative").glob("*.jpg"))[:n - n // 2]
    assert len(files) == n
    return files


def send_traffic(url, workspace, n=12):
    """n multipart predictions the seed's way, and two bad requests (4xx)."""
    for f in images(workspace, n):
        with open(f, "rb") as fh:
            r = requests.post(url + "/predict", files={"file": (f.name, fh, "image/jpeg")}, timeout=60)
        assert r.status_code == 200, r.text
    assert 400 <= requests.post(url + "/predict", data=b"not an image", headers={"Content-Type": "image/jpeg"},
                                timeout=60).status_code < 500
    assert 400 <= requests.post(url + "/predict", data=b"{", headers={"Content-Type": "application/json"},
                                timeout=60).status_code < 500


def scrape(url):
    r = requests.get(url + "/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return r.text


# ---- static files ---------------------------------------------------------------------------

@need_promtool
def test_alert_rules_check_and_unit_tests():
    p = promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout
    # the rule unit tests make every alert fire (and stay quiet when healthy)
    p = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=DEPLOY / "prometheus",
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    alerts = {r["alert"] for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for case in yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert alerts == tested, f"alerts without a firing unit test: {alerts - tested}"
    for want in ("ImopsHighErrorRate", "ImopsHighP99Latency", "ImopsInputDrift", "ImopsPredictionDrift",
                 "ImopsModelNotReady", "ImopsTargetDown"):
        assert want in alerts


@need_promtool
def test_prometheus_config_check():
    p = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert p.returncode == 0, p.stdout + p.stderr
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    assert {"imops-serve", "imops-train"} <= jobs


def test_grafana_provisioning_and_dashboards():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"] if d["type"] == "prometheus"}
    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "imops.yml").read_text())
    assert prov["providers"][0]["type"] == "file"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.endswith(":" + prov["providers"][0]["options"]["path"] + ":ro") for m in mounts), mounts
    assert {d.name for d in DASHBOARDS} >= {"imops-serving.json", "imops-training.json"}
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"] and "id" not in dash
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for p in dash["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, f"{path.name}: {p['title']} {g}"
            if p["type"] != "row":
                assert p["datasource"]["uid"] in uids, f"{path.name}: {p['title']} names an unprovisioned data source"
                assert p["targets"], f"{path.name}: {p['title']} has no query"
    serving = json.loads((DEPLOY / "grafana" / "dashboards" / "imops-serving.json").read_text())
    used = set().union(*(promql_metric_names(q) for _, q in dashboard_queries(serving)))
    # the panels the issue asks for: request rate, latency quantiles, errors, batch sizes,
    # class mix, confidence, drift, CPU and memory
    for m in ("imops_http_requests_total", "imops_http_request_duration_seconds_bucket", "imops_batch_size_bucket",
              "imops_predictions_total", "imops_prediction_confidence_bucket", "imops_input_drift_score",
              "imops_prediction_class_psi", "process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert m in used, f"the serving dashboard has no panel on {m}"
    assert any("histogram_quantile(0.99" in q for _, q in dashboard_queries(serving))


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")
def test_dockerfile_package_lists(imops_bin):
    """The image's two package lists, made by the scripts the Dockerfile runs: the builder's (the
    project's list less test-only packages) and the runtime's (owners of imops' shared libraries)."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "deploy/docker/build-packages.sh" in dockerfile and "deploy/docker/runtime-packages.sh" in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.M) and 'ENTRYPOINT ["imops"]' in dockerfile
    assert "ENV IMOPS_HOME=/workspace" in dockerfile
    build = subprocess.run([str(DEPLOY / "docker" / "build-packages.sh")], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    assert {"cmake", "pkg-config", "libmicrohttpd-dev", "libjansson-dev"} <= set(build)
    assert not [p for p in build if p.startswith("python3") or p in ("prometheus", "wrk", "libcmocka-dev")], build
    runtime = subprocess.run([str(DEPLOY / "docker" / "runtime-packages.sh"), imops_bin], capture_output=True,
                             text=True, timeout=60, check=True).stdout.split()
    assert {"libc6", "libmicrohttpd12", "libjansson4", "libsqlite3-0"} <= set(runtime), runtime
    assert not [p for p in runtime if p.endswith("-dev")], runtime
    # every package is a real, installed Debian package here (the image installs the same names)
    names = sorted(set(build + runtime))
    p = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *names], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.count("install ok installed") == len(names), p.stdout + p.stderr


def test_promql_name_extraction_finds_names():
    """The checker below must be able to fail: it sees metric names, not functions, labels or variables."""
    q = ('histogram_quantile(0.99, sum by (le) (rate(foo_seconds_bucket{job=~"$job",route="/x"}[$__rate_interval])))'
         ' / ignoring(class) group_left sum(bar_total offset 5m) > bool 2^30')
    assert promql_metric_names(q) == {"foo_seconds_bucket", "bar_total"}
    assert promql_metric_names("time() - process_start_time_seconds{a=\"b\"}") == {"process_start_time_seconds"}


def test_kubernetes_manifests(serve):
    """The Deployment serves the registry model with imops' args, its probes name routes the live
    server answers 200, the Service and ServiceMonitor select its pods and port."""
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs if "metadata" in d}
    dep = kinds[("Deployment", "surface-classifier")]
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["args"][:2] == ["serve", "models:/surface@production"]
    assert {"/readyz", "/livez"} <= {c[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in c:
            path = c[probe]["httpGet"]["path"]
            assert requests.get(serve["url"] + path, timeout=10).status_code == 200, path
    assert c["resources"]["limits"] and c["resources"]["requests"]
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]  # serving on while endpoints drop the pod
    assert pre_stop[0] == "sleep" and 0 < int(pre_stop[1]) < pod["spec"]["terminationGracePeriodSeconds"]
    claim = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v][0]["persistentVolumeClaim"]["claimName"]
    assert claim == "workspace-surface" and ("PersistentVolumeClaim", "workspace-surface") in kinds
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    port = c["ports"][0]
    svc = kinds[("Service", "surface-classifier")]
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] in (port["name"], port["containerPort"])
    sm = kinds[("ServiceMonitor", "surface-classifier")]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


# ---- live /metrics ----------------------------------------------------------------------------

@need_promtool
def test_serve_metrics_pass_promtool(serve, workspace):
    send_traffic(serve["url"], workspace)
    text = scrape(serve["url"])
    p = promtool("check", "metrics", stdin=text)
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    types, samples = parse_exposition(text)
    missing = METRICS_SERVE - set(types)
    assert not missing, f"imops serve does not export {sorted(missing)}"
    assert value(samples, "imops_http_requests_total", route="/predict", method="POST", code="200") >= 12
    assert value(samples, "imops_model_ready") == 1
    assert value(samples, "imops_model_info", name="surface", version="1", run_id=workspace["run_id"]) == 1
    assert {lb["channel"] for n, lb, _ in samples if n == "imops_input_drift_score"} == {"R", "G", "B"}


def test_dashboard_names_only_exported_metrics(serve, workspace):
    send_traffic(serve["url"], workspace, n=2)
    exported = exported_names(parse_exposition(scrape(serve["url"]))[0])
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "imops-serving.json").read_text())
    queries = dashboard_queries(dash)
    assert len(queries) >= 20
    for where, q in queries:
        names = promql_metric_names(q)
        assert names, f"{where}: no metric in {q!r}"
        unknown = names - exported
        assert not unknown, f"imops-serving.json {where}: {sorted(unknown)} are not exported by imops serve ({q})"


@need_promtool
def test_train_metrics_port(imops_bin, workspace, tmp_path):
    """`imops train --metrics-port 0` serves its progress while it runs; promtool accepts it, the
    training dashboard names only what it exports; SIGTERM stops the run and the server."""
    log = tmp_path / "train.log"
    env = dict(os.environ, IMOPS_HOME=str(tmp_path / "ws"))
    with open(log, "wb") as f:
        proc = subprocess.Popen([imops_bin, "train", "--data", str(workspace["data"]), "--img-size", "32",
                                 "--epochs", "500", "--batch-size", "32", "--no-track", "--output",
                                 str(tmp_path / "out"), "--metrics-port", "0"],
                                stdout=subprocess.DEVNULL, stderr=f, env=env)
    try:
        line = wait_for("the metrics address on stderr",
                        lambda: re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text()),
                        timeout=60, proc=proc, log=log)
        url = line.group(1)[:-len("/metrics")]

        def after_first_epoch():
            types, samples = parse_exposition(scrape(url))
            return (types, samples) if any(n == "imops_train_loss" and lb.get("split") == "val"
                                           for n, lb, _ in samples) else None
        types, samples = wait_for("a finished epoch on /metrics", after_first_epoch, timeout=300, proc=proc, log=log)
        text = scrape(url)
        p = promtool("check", "metrics", stdin=text)
        assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
        types, samples = parse_exposition(text)
        assert METRICS_TRAIN <= set(types), f"missing {sorted(METRICS_TRAIN - set(types))}"
        assert types["imops_train_images_total"] == "counter" and types["imops_train_loss"] == "gauge"
        step = value(samples, "imops_train_step")
        images = value(samples, "imops_train_images_total")
        # one epoch is done: all n_train images (its last batch is smaller); at most 32 per step
        assert value(samples, "imops_train_epoch") >= 1 and step >= math.ceil(workspace["n_train"] / 32)
        assert workspace["n_train"] <= images <= 32 * step
        for split in ("train", "val"):
            assert 0 <= value(samples, "imops_train_accuracy", split=split) <= 1
            assert 0 < value(samples, "imops_train_loss", split=split) < 10
        assert value(samples, "imops_train_images_per_second") > 0
        assert value(samples, "imops_train_learning_rate") > 0
        assert value(samples, "process_resident_memory_bytes") > 0
        # the training dashboard names only these metrics
        exported = exported_names(types)
        dash = json.loads((DEPLOY / "grafana" / "dashboards" / "imops-training.json").read_text())
        for where, q in dashboard_queries(dash):
            unknown = promql_metric_names(q) - exported
            assert not unknown, f"imops-training.json {where}: {sorted(unknown)} not exported by imops train"
    finally:
        rc = stop(proc, signal.SIGTERM, timeout=60)
    assert rc == 1, log.read_text()  # cancelled: checkpoint kept, exit status 1
    assert "continue with: imops train --resume" in log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/metrics", timeout=5)


def test_train_metrics_port_errors(imops, workspace, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        p = imops.run("train", "--data", workspace["data"], "--epochs", 1, "--no-track", "--output", tmp_path / "o",
                      "--metrics-port", busy, check=False)
    assert p.returncode == 1 and "--metrics-port" in p.stderr and "address in use" in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()
    p = imops.run("train", "--data", workspace["data"], "--metrics-port", 70000, check=False)
    assert p.returncode == 2 and "--metrics-port" in p.stderr


# ---- a real Prometheus --------------------------------------------------------------------------

@need_prometheus
def test_prometheus_scrapes_serve(serve, workspace, tmp_path):
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [{"job_name": "imops-serve", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [f"127.0.0.1:{serve['port']}"]}]}],
    }))
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                                stdout=f, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(q):
        r = requests.get(api + "/query", params={"query": q}, timeout=10).json()
        assert r["status"] == "success", f"{q}: {r}"
        return r["data"]["result"]

    try:
        wait_for("prometheus ready", lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=5).ok,
                 timeout=60, proc=proc, log=log)
        wait_for("the imops-serve target up", lambda: query('up{job="imops-serve"} == 1'), timeout=60, proc=proc, log=log)
        send_traffic(serve["url"], workspace, n=20)
        reqs = wait_for("the request counter", lambda: query(
            'imops_http_requests_total{job="imops-serve",route="/predict",method="POST",code="200"} >= 20'),
            timeout=60, proc=proc, log=log)
        assert reqs[0]["metric"]["instance"] == f"127.0.0.1:{serve['port']}"
        buckets = query('imops_http_request_duration_seconds_bucket{job="imops-serve",route="/predict"}')
        assert len(buckets) >= 2 and any(b["metric"]["le"] == "+Inf" and float(b["value"][1]) >= 20 for b in buckets)
        wait_for("a p99 latency from the histogram", lambda: [r for r in query(
            'histogram_quantile(0.99, sum by (le) (rate(imops_http_request_duration_seconds_bucket'
            '{job="imops-serve",route="/predict"}[1m])))') if math.isfinite(float(r["value"][1]))],
            timeout=60, proc=proc, log=log)
        drift = query('imops_input_drift_score{job="imops-serve"}')
        assert {d["metric"]["channel"] for d in drift} == {"R", "G", "B"}
        assert all(math.isfinite(float(d["value"][1])) and float(d["value"][1]) >= 0 for d in drift)
        assert query("imops_prediction_class_psi") and query('imops_model_ready == 1')
        assert sum(float(r["value"][1]) for r in query("imops_predictions_total")) >= 20
        # every dashboard query is valid PromQL that Prometheus evaluates, and most have data now
        with_data = 0
        queries = [q for d in DASHBOARDS if "serving" in d.name for _, q in dashboard_queries(json.loads(d.read_text()))]
        for q in queries:
            with_data += bool(query(grafana_to_promql(q)))
        assert with_data >= len(queries) * 2 // 3, f"only {with_data} of {len(queries)} dashboard queries have data"
        # the alert rules load and evaluate; a healthy server fires none of the serving alerts
        rules = wait_for("the alert rules evaluated", lambda: [
            r for g in requests.get(api + "/rules", timeout=10).json()["data"]["groups"] for r in g["rules"]
            if r.get("lastEvaluation", "").startswith("20") and r["health"] == "ok"], timeout=60, proc=proc, log=log)
        assert len(rules) >= 6
        firing = [a for a in requests.get(api + "/alerts", timeout=10).json()["data"]["alerts"]
                  if a["labels"]["alertname"] in ("ImopsTargetDown", "ImopsModelNotReady", "ImopsHighErrorRate")]
        assert not firing, firing
    finally:
        stop(proc)
