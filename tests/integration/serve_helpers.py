"""imops serve for the integration tests that talk to it (test_serve.py,
test_serve_docs.py): a workspace with a tiny registered surface model, and the
server on a free loopback port (--port 0), stopped by PID. Import the fixtures
`ws` and `server` into a test module to use them."""
import os
import re
import select
import signal
import subprocess
import time

import pytest
import requests


@pytest.fixture(scope="module")
def ws(imops, tmp_path_factory):
    """A workspace with the model 'surface': version 1 (alias production) and
    version 2 (another seed), trained one epoch on 120 images at 32x32."""
    root = tmp_path_factory.mktemp("serve")
    data = root / "data"
    env = {"IMOPS_HOME": str(root / "ws")}
    imops.run("datagen", "surface", "--out", data, "--count", 120, "--size", 64, "--seed", 5, "--no-sheet")
    imops.run("preprocess", "--data", data, "--img-size", 32)
    for seed in (1, 2):
        r = imops.json("train", "--data", data, "--model", "surfacenet", "--epochs", 1, "--batch-size", 16,
                       "--seed", seed, "--output", root / f"out{seed}", "--experiment", "serve", env=env)
        imops.run("models", "register", r["run_id"], "surface", env=env)
    imops.run("models", "alias", "surface", "production", "1", env=env)
    images = sorted((data / "Positive").glob("*.jpg"))[:4] + sorted((data / "Negative").glob("*.jpg"))[:4]
    return {"root": root, "data": data, "env": env, "images": images}


class Server:
    """`imops serve` on a free loopback port (--port 0), stopped by PID."""

    def __init__(self, imops_bin, ws, *args, uri="models:/surface@production"):
        env = dict(os.environ)
        env.update(ws["env"])
        env.setdefault("IMOPS_NUM_THREADS", "2")
        self.p = subprocess.Popen([imops_bin, "serve", uri, "--port", "0", *map(str, args)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not line:
            r, _, _ = select.select([self.p.stdout], [], [], 1.0)
            if r:
                line = self.p.stdout.readline()
                if not line:
                    break
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.p.kill()
            raise AssertionError(f"imops serve did not start: {line!r} {self.p.stderr.read()}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode

    def metrics(self):
        r = requests.get(self.url + "/metrics", timeout=30)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.text


@pytest.fixture
def server(imops_bin, ws):
    started = []

    def start(*args, **kw):
        s = Server(imops_bin, ws, *args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:  # each stops cleanly: SIGTERM drains and exits 0 (under ASan: without leaks)
        was_running = s.p.poll() is None
        rc = s.stop()
        if was_running:
            assert rc == 0, f"imops serve exited {rc}: {s.p.stderr.read()[-3000:]}"
