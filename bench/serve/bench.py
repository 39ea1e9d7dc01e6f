#!/usr/bin/python3
"""bench/serve: imops serve against BentoML serving the same network with the same
weights, one after the other on this machine, under wrk at several concurrencies.

Both servers answer POST /predict with a multipart upload of one 227x227 JPEG
(the real data set's size; the field "images", as the seed's client sent files)
and both batch adaptively up to the same batch size (imops: --max-batch-size,
--max-latency-ms; BentoML: @bentoml.api(batchable=True, max_batch_size) with its
default latency budget, as a tighter one makes it shed load with 503). For every
concurrency: requests/s and the p50/p99 latency that wrk reports, median of
--runs runs; and the resident memory of each server, summed over all its
processes (BentoML runs several), idle after start and at its peak under load.
Called by bench/serve/run.sh (make bench-serve); stdlib only."""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    log("+", " ".join(map(str, cmd)))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


# ---- memory: a process and all its descendants ------------------------------------------------
# (BentoML's workers call setsid, so neither the session nor the process group finds them)

def tree_pids(root):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # field 4 of stat: the parent
            children.setdefault(ppid, []).append(int(d))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def start_time(pid):
    """The process's start time (field 22 of stat), to tell it from a later process with the same PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def tree_rss(root):
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, root, period=0.2):
        super().__init__(daemon=True)
        self.root, self.period, self.peak, self._done = root, period, 0, threading.Event()

    def run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, tree_rss(self.root))
            self._done.wait(self.period)

    def stop(self):
        self._done.set()
        self.join()
        return self.peak


# ---- servers -----------------------------------------------------------------------------------

class Server:
    def __init__(self, name, cmd, url, ready, env=None, cwd=None, logdir=None):
        self.name, self.url, self.ready = name, url, ready
        self.log = Path(logdir) / f"{name}.log"
        with open(self.log, "wb") as f:
            # its own process group: one signal reaches the server and the children that stay in it
            self.proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, **(env or {})), cwd=cwd, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{name} did not become ready:\n{self.log.read_text()[-3000:]}")

    def rss(self):
        return tree_rss(self.proc.pid)

    def stop(self):
        tree = {pid: start_time(pid) for pid in tree_pids(self.proc.pid)[1:]}
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the session we started (its id is our child's PID)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        time.sleep(1)
        for pid, started in tree.items():  # workers left behind (the same processes found before the stop)
            if started is not None and start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def post(url, body, ctype):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


# ---- wrk ------------------------------------------------------------------------------------------

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def seconds(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(url, conc, duration, env):
    cmd = ["wrk", "-t", str(min(conc, 2)), "-c", str(conc), "-d", f"{duration}s", "--timeout", "30s", "--latency",
           "-s", str(HERE / "post.lua"), url]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **env), timeout=duration + 120)
    if p.returncode != 0:
        raise SystemExit(f"wrk failed: {p.stdout}{p.stderr}")
    out = p.stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    m = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    res = {"p50": seconds(lat["50"]), "p99": seconds(lat["99"]), "requests": int(m.group(1)),
           "elapsed": seconds(m.group(2)), "errors": 0}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(map(int, m.groups()))
    res["rps"] = max(0, res["requests"] - res["errors"]) / res["elapsed"]  # answered with 2xx, per second
    return res


def measure(server, conc_list, runs, duration, env):
    out = {"idle_rss": server.rss(), "by_conc": {}}
    wrk(server.url, 8, 3, env)  # warm-up
    peak = 0
    for c in conc_list:
        rs = []
        for i in range(runs):
            sampler = RssSampler(server.proc.pid)
            sampler.start()
            r = wrk(server.url, c, duration, env)
            peak = max(peak, sampler.stop())
            log(f"  {server.name} c={c} run {i + 1}: {r['rps']:.1f} req/s p50 {r['p50'] * 1e3:.2f} ms "
                f"p99 {r['p99'] * 1e3:.2f} ms errors {r['errors']}")
            rs.append(r)
        out["by_conc"][c] = {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p99")}
        out["by_conc"][c]["errors"] = sum(x["errors"] for x in rs)
        out["by_conc"][c]["runs"] = rs
    out["peak_rss"] = peak
    return out


# ---- main -----------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imops", default=str(ROOT / "build" / "imops"))
    ap.add_argument("--bentoml", default=str(ROOT / "bench" / ".venv-bentoml" / "bin" / "bentoml"))
    ap.add_argument("--work", default=str(ROOT / ".bench" / "serve"))
    ap.add_argument("--img-size", type=int, default=112, help="the model's input size (the seed's)")
    ap.add_argument("--images", type=int, default=1000, help="generated images to train the model on")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-latency-ms", type=int, default=20, help="imops' longest batching hold")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="compute threads of each server (IMOPS_NUM_THREADS; torch.set_num_threads); default all CPUs")
    ap.add_argument("--imops-workers", type=int, default=0,
                    help="imops serve --workers: inference workers, each with its own copy of the model and a "
                         "share of --threads; 0 (default): imops' own default, one worker per thread")
    ap.add_argument("--bentoml-workers", type=int, default=1,
                    help="BentoML service workers (processes), each with its own copy of the model")
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args()
    a.imops, a.bentoml, a.work = (os.path.abspath(p) for p in (a.imops, a.bentoml, a.work))
    conc = [int(c) for c in a.concurrency.split(",")]
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)

    # the model: surfacenet trained briefly on generated surface images (weights only need to be the same
    # on both sides; accuracy does not matter for speed)
    data = work / "surface"
    model = work / f"surfacenet-{a.img_size}" / "model"
    if not (data / "Positive").is_dir():
        run([a.imops, "datagen", "surface", "--out", data, "--count", a.images, "--size", 227, "--seed", 11, "--no-sheet"])
    if not (model / "model.safetensors").exists():
        run([a.imops, "train", "--data", data, "--img-size", a.img_size, "--epochs", 1, "--batch-size", 32,
             "--optimizer", "adam", "--lr", 0.003, "--weight-decay", 0, "--no-track", "--output", model.parent],
            stdout=subprocess.DEVNULL)

    # one request body for both: a 227x227 JPEG under "images"
    img = sorted((data / "Positive").glob("*.jpg"))[0]
    boundary = "imopsbench7d3f0a"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{img.name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + img.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    (work / "body.bin").write_bytes(body)
    ctype = f"multipart/form-data; boundary={boundary}"
    env = {"BENCH_BODY": str(work / "body.bin"), "BENCH_CONTENT_TYPE": ctype}

    results, answers = {}, {}
    threads = {"IMOPS_NUM_THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.threads)}
    port = free_port()
    log(f"== imops serve ({a.imops})")
    s = Server("imops", [a.imops, "serve", model, "--host", "127.0.0.1", "--port", port, "--max-batch-size",
                         a.max_batch_size, "--max-latency-ms", a.max_latency_ms,
                         *(["--workers", a.imops_workers] if a.imops_workers > 0 else [])],
               f"http://127.0.0.1:{port}/predict?format=classes", f"http://127.0.0.1:{port}/readyz", env=threads,
               logdir=work)
    try:
        answers["imops"] = post(s.url, body, ctype)
        results["imops"] = measure(s, conc, a.runs, a.duration, env)
    finally:
        s.stop()
    port = free_port()
    log(f"== BentoML ({a.bentoml})")
    s = Server("bentoml", [a.bentoml, "serve", "bento_service:SurfaceClassifier", "--host", "127.0.0.1",
                           "--port", port], f"http://127.0.0.1:{port}/predict", f"http://127.0.0.1:{port}/readyz",
               env={"IMOPS_BENCH_MODEL": str(model), "IMOPS_BENCH_MAX_BATCH": str(a.max_batch_size),
                    "BENTOML_DO_NOT_TRACK": "true", "IMOPS_BENCH_BENTO_WORKERS": str(a.bentoml_workers),
                    **threads},
               cwd=HERE, logdir=work)
    try:
        answers["bentoml"] = post(s.url, body, ctype)
        results["bentoml"] = measure(s, conc, a.runs, a.duration, env)
    finally:
        s.stop()
    if answers["imops"] != answers["bentoml"]:
        log(f"warning: the servers disagree on the bench image: imops {answers['imops']}, "
            f"BentoML {answers['bentoml']}")

    im, bm = results["imops"], results["bentoml"]
    print(f"bench/serve: surfacenet {a.img_size}x{a.img_size}, one 227x227 JPEG per multipart request, "
          f"max batch {a.max_batch_size}, imops --max-latency-ms {a.max_latency_ms}; wrk {a.duration} s x {a.runs} "
          f"runs (median); {a.threads} compute threads each on {os.cpu_count()} CPUs; workers imops {a.imops_workers or 'default'} "
          f"BentoML {a.bentoml_workers}; answers imops {answers['imops']} BentoML {answers['bentoml']}")
    hdr = (f"{'conc':>4} | {'imops req/s':>11} {'BentoML req/s':>13} {'ratio':>7} | {'imops p50':>9} "
           f"{'BentoML p50':>11} | {'imops p99':>9} {'BentoML p99':>11} {'p99 ratio':>9} | errors i/b")
    print(hdr)
    print("-" * len(hdr))
    for c in conc:
        i, b = im["by_conc"][c], bm["by_conc"][c]
        print(f"{c:>4} | {i['rps']:>11.1f} {b['rps']:>13.1f} {i['rps'] / b['rps']:>6.2f}x | "
              f"{i['p50'] * 1e3:>7.2f}ms {b['p50'] * 1e3:>9.2f}ms | {i['p99'] * 1e3:>7.2f}ms {b['p99'] * 1e3:>9.2f}ms "
              f"{b['p99'] / i['p99']:>8.2f}x | {i['errors']}/{b['errors']}")
    mib = 1 << 20
    print(f"resident memory (all processes): idle imops {im['idle_rss'] / mib:.1f} MiB, BentoML "
          f"{bm['idle_rss'] / mib:.1f} MiB ({bm['idle_rss'] / im['idle_rss']:.1f}x); peak under load imops "
          f"{im['peak_rss'] / mib:.1f} MiB, BentoML {bm['peak_rss'] / mib:.1f} MiB "
          f"({bm['peak_rss'] / im['peak_rss']:.1f}x)")
    print("req/s counts 2xx answers only; ratios: req/s imops/BentoML, p99 and memory BentoML/imops "
          "(higher is better for imops)")
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "answers": answers, "args": vars(a)}, indent=1))


if __name__ == "__main__":
    main()
