"""bench/track: `imops server` against `mlflow server` (SQLite backend), both
started here on loopback, driven by the same Python load generator
(Python: http.client / requests, one connection per process or thread):

  log_batch throughput  4 processes x N runs/log-batch requests (keep-alive
                        http.client, bodies made beforehand), each with 10
                        metrics and 10 params (new keys per request): req/s
  search latency        runs/search over 10,000 runs (filter on a metric and a
                        param, order by a metric, 100 results): p50 / p99 ms

Each figure is the median of 3 rounds; the table shows both servers and the
ratio (imops against MLflow). The search runs are created through imops'
REST API, and with MLflow's own store API for MLflow (its REST is too slow for
10,000 runs here); creating them is not measured.
Usage: bench_track.py IMOPS_BIN [--runs 10000]."""
import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: server exited {proc.returncode}")
        try:
            if requests.get(url + "/health", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url}: no answer on /health")


def start(kind, imops_bin, tmp):
    port = free_port()
    log = open(tmp / f"{kind}.log", "wb")
    if kind == "imops":
        cmd = [imops_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workspace", str(tmp / "imops-ws")]
    else:
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination",
               str(tmp / "mlartifacts")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_health(url, proc)
    return proc, url


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def api(s, url, method, ep, body=None):
    r = s.request(method, f"{url}/api/2.0/mlflow/{ep}", json=body if method != "GET" else None,
                  params=body if method == "GET" else None, timeout=300)
    if r.status_code != 200:
        raise SystemExit(f"{method} {ep}: {r.status_code} {r.text[:300]}")
    return r.json()


def experiment(s, url, name):
    return api(s, url, "POST", "experiments/create", {"name": name})["experiment_id"]


def parallel(threads, fn):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    [t.start() for t in ts]
    [t.join() for t in ts]
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def lb_worker(args):
    """One load process: its own run and keep-alive connection; bodies are made
    before the common start time, so only the requests are timed."""
    url, exp, n, tag, start_at = args
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    hdr = {"Content-Type": "application/json"}

    def post(ep, body):
        c.request("POST", f"/api/2.0/mlflow/{ep}", body=body, headers=hdr)
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{ep}: {r.status} {data[:300]!r}")
        return data

    rid = json.loads(post("runs/create", json.dumps({"experiment_id": exp})))["run"]["info"]["run_id"]
    ts = int(time.time() * 1000)
    bodies = [json.dumps({"run_id": rid,
                          "metrics": [{"key": f"m{j}", "value": random.random(), "timestamp": ts, "step": k}
                                      for j in range(10)],
                          "params": [{"key": f"p{tag}_{k}_{j}", "value": str(j)} for j in range(10)]})
              for k in range(n)]
    time.sleep(max(0.0, start_at - time.time()))
    for b in bodies:
        post("runs/log-batch", b)
    end = time.time()
    c.close()
    return end


def log_batch_round(url, exp, procs, n, rnd):
    """procs processes (no shared GIL) x n log-batch requests: requests per second."""
    start_at = time.time() + 2.0
    with multiprocessing.Pool(procs) as pool:
        ends = pool.map(lb_worker, [(url, exp, n, f"{rnd}x{i}", start_at) for i in range(procs)])
    return procs * n / (max(ends) - start_at)


def populate(url, exp, runs, threads):
    per = (runs + threads - 1) // threads

    def work(i):
        s = requests.Session()
        rng = random.Random(i)
        for k in range(per):
            if i * per + k >= runs:
                return
            run = api(s, url, "POST", "runs/create", {"experiment_id": exp, "start_time": 1_700_000_000_000 + i * per + k})
            rid = run["run"]["info"]["run_id"]
            api(s, url, "POST", "runs/log-batch", {
                "run_id": rid,
                "metrics": [{"key": "val_accuracy", "value": rng.random(), "timestamp": 1, "step": 0},
                            {"key": "val_loss", "value": rng.random(), "timestamp": 1, "step": 0}],
                "params": [{"key": "optimizer", "value": rng.choice(["adam", "sgd", "adamw"])},
                           {"key": "lr", "value": str(rng.choice([0.1, 0.01, 0.001]))}]})

    return parallel(threads, work)


SEARCH = {"filter": "metrics.val_accuracy > 0.5 and params.optimizer = 'adam'",
          "order_by": ["metrics.val_accuracy DESC"], "max_results": 100}


def search_round(url, exp, reps):
    s = requests.Session()
    body = dict(SEARCH, experiment_ids=[exp])
    for _ in range(3):  # warm-up
        api(s, url, "POST", "runs/search", body)
    lat = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = api(s, url, "POST", "runs/search", body)
        lat.append((time.perf_counter() - t0) * 1000)
        assert r.get("runs"), "the search found nothing"
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def populate_mlflow_store(tmp, runs):
    """The 10,000 runs for MLflow's search, written with its own SqlAlchemyStore into
    the database the server then opens: through its REST API (about 20 requests/s
    here) that alone would take a quarter of an hour. Not measured."""
    from mlflow.entities import Metric, Param
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy import event
    store = SqlAlchemyStore(f"sqlite:///{tmp / 'mlflow.db'}", str(tmp / "mlartifacts"))
    # no fsync per commit while filling (the server later opens the database as usual)
    event.listen(store.engine, "connect", lambda conn, rec: conn.execute("PRAGMA synchronous = OFF"))
    store.engine.dispose()
    exp = store.create_experiment("bench-search")
    rng = random.Random(0)
    t0 = time.perf_counter()
    for i in range(runs):
        r = store.create_run(exp, user_id="bench", start_time=1_700_000_000_000 + i, tags=[], run_name=None)
        store.log_batch(r.info.run_id, metrics=[Metric("val_accuracy", rng.random(), 1, 0),
                                                Metric("val_loss", rng.random(), 1, 0)],
                        params=[Param("optimizer", rng.choice(["adam", "sgd", "adamw"])),
                                Param("lr", str(rng.choice([0.1, 0.01, 0.001])))], tags=[])
    store.engine.dispose()
    return exp, time.perf_counter() - t0


def bench(kind, imops_bin, tmp, a):
    if kind == "mlflow":
        sexp, t = populate_mlflow_store(tmp, a.runs)
        print(f"  {kind}: {a.runs} runs created in {t:.0f} s (its store API)", file=sys.stderr, flush=True)
    proc, url = start(kind, imops_bin, tmp)
    try:
        s = requests.Session()
        out = {}
        exp = experiment(s, url, "bench-log")
        log_batch_round(url, exp, a.threads, 10, "warm")  # warm-up
        out["rps"] = statistics.median(log_batch_round(url, exp, a.threads, a.requests, r) for r in range(3))
        if kind == "imops":
            sexp = experiment(s, url, "bench-search")
            t = populate(url, sexp, a.runs, 8)
            print(f"  {kind}: {a.runs} runs created in {t:.0f} s (REST)", file=sys.stderr, flush=True)
        rounds = [search_round(url, sexp, a.search_reps) for _ in range(3)]
        out["p50"] = statistics.median(r[0] for r in rounds)
        out["p99"] = statistics.median(r[1] for r in rounds)
        return out
    finally:
        stop(proc)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("imops_bin")
    p.add_argument("--threads", type=int, default=4, help="load processes for log-batch")
    p.add_argument("--requests", type=int, default=100, help="log-batch requests per thread and round")
    p.add_argument("--runs", type=int, default=10000)
    p.add_argument("--search-reps", type=int, default=50)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="imops-bench-track-"))
    try:
        res = {}
        for kind in ("imops", "mlflow"):
            print(f"bench/track: {kind} server ...", file=sys.stderr, flush=True)
            (tmp / kind).mkdir()
            res[kind] = bench(kind, a.imops_bin, tmp / kind, a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    i, m = res["imops"], res["mlflow"]
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"bench/track: {a.threads} processes x {a.requests} log-batch requests (10 metrics + 10 params each); "
          f"runs/search over {a.runs} runs ({SEARCH['filter']!r}, order by {SEARCH['order_by'][0]}, 100 results); "
          f"median of 3 rounds")
    print(f"{'':28} {'imops server':>14} {'mlflow server':>14} {'ratio':>8}")
    print(f"{'log_batch requests/s':28} {i['rps']:14.0f} {m['rps']:14.0f} {i['rps'] / m['rps']:7.1f}x")
    print(f"{'search p50 (ms)':28} {i['p50']:14.2f} {m['p50']:14.2f} {i['p50'] / m['p50']:8.3f}")
    print(f"{'search p99 (ms)':28} {i['p99']:14.2f} {m['p99']:14.2f} {i['p99'] / m['p99']:8.3f}")


if __name__ == "__main__":
    main()
