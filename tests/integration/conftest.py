"""Shared fixtures for the integration tests: the imops binary and helpers to run it."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def imops_bin():
    path = os.environ.get("IMOPS_BIN") or str(ROOT / "build" / "imops")
    if not os.access(path, os.X_OK):
        pytest.fail(f"imops binary not found at {path}; run 'make build' (or set IMOPS_BIN)")
    return path


class Imops:
    def __init__(self, binary):
        self.binary = binary

    def run(self, *args, check=True, timeout=600, env=None):
        full_env = dict(os.environ)
        full_env.pop("MLFLOW_TRACKING_URI", None)  # imops honours it; only env= may set it
        if env:
            full_env.update(env)
        p = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True,
                           timeout=timeout, env=full_env)
        if check and p.returncode != 0:
            raise AssertionError(f"imops {' '.join(map(str, args))} exited {p.returncode}\n"
                                 f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def json(self, *args, **kw):
        p = self.run(*args, "--json", **kw)
        return json.loads(p.stdout)


@pytest.fixture(scope="session")
def imops(imops_bin):
    return Imops(imops_bin)


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri():
    """mlflow.set_tracking_uri() also sets MLFLOW_TRACKING_URI in os.environ, and imops
    train/test honour it: one test's server address must not leak into the next test."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
