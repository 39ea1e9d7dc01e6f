"""A sweep shared through `imops server` (--tracking-uri): the server on
loopback, three `imops sweep agent` processes, each with its own IMOPS_HOME
as on separate machines, run one sweep together: exactly --count trials,
none claimed twice, every trial a run on the server (read back with the
official mlflow client), child of the sweep's parent run, tagged with the
sweep id; `sweep show` / `list` through the server. And the sweep endpoints'
answers to malformed requests: 4xx JSON errors in MLflow's style, the token
for writes."""
import json
import os
import subprocess

import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow (tests/requirements.txt) is not installed")
requests = pytest.importorskip("requests")
from mlflow import MlflowClient  # noqa: E402

from test_mlflow_client import Server  # noqa: E402

SWEEP = """\
name: shared
method: random
metric: {name: val_loss, goal: minimize}
parameters:
  batch_size: {values: [8, 16]}
  lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}
  optimizer: {values: [adam, sgd]}
  img_size: {value: 32}
  epochs: {value: 1}
"""
COUNT = 5


@pytest.fixture(scope="module")
def data(imops, tmp_path_factory):
    d = tmp_path_factory.mktemp("sweepsrv") / "surface"
    imops.run("datagen", "surface", "--out", d, "--count", 30, "--size", 48, "--seed", 4, "--no-sheet")
    imops.run("preprocess", "--data", d, "--img-size", 32)
    return d


def machine_env(home):
    env = dict(os.environ, IMOPS_HOME=str(home), IMOPS_NUM_THREADS="1")
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "IMOPS_TOKEN"):
        env.pop(k, None)
    return env


def test_three_agents_share_a_sweep_through_the_server(imops, imops_bin, data, tmp_path):
    srv = Server(imops_bin, tmp_path / "srv-ws")
    try:
        cfg = tmp_path / "sweep.yaml"
        cfg.write_text(SWEEP)
        created = imops.json("sweep", "create", cfg, "--data", data, "--count", COUNT, "--seed", 7,
                             "--tracking-uri", srv.url, "--json", env=machine_env(tmp_path / "creator"))
        sweep_id = created["sweep_id"]
        # nothing of the sweep is in the creator's own workspace
        local = subprocess.run([imops_bin, "sweep", "list", "--json"], capture_output=True, text=True,
                               env=machine_env(tmp_path / "creator"))
        assert local.returncode == 0 and json.loads(local.stdout) == [], local.stdout + local.stderr

        agents = []
        for i in range(3):
            home = tmp_path / f"machine{i}"
            out = open(tmp_path / f"agent{i}.out", "w")
            err = open(tmp_path / f"agent{i}.err", "w")
            agents.append((subprocess.Popen([imops_bin, "sweep", "agent", sweep_id, "--tracking-uri", srv.url,
                                             "--json"], stdout=out, stderr=err, env=machine_env(home)), out, err))
        for i, (p, out, err) in enumerate(agents):
            rc = p.wait(timeout=600)
            out.close(), err.close()
            assert rc == 0, (tmp_path / f"agent{i}.err").read_text()[-3000:]

        got = srv.api("GET", "imops/sweeps/get", params={"sweep_id": sweep_id})
        assert got.status_code == 200, got.text
        state = got.json()
        trials = state["trials"]
        assert [t["trial"] for t in trials] == list(range(1, COUNT + 1))
        assert all(t["state"] == "FINISHED" for t in trials), trials
        run_ids = [t["run_id"] for t in trials]
        assert len(set(run_ids)) == COUNT and all(run_ids)
        # every agent id names one of the three agents; the runs' tags agree with the claims
        agent_ids = {t["agent_id"] for t in trials}
        assert 1 <= len(agent_ids) <= 3
        assert {(s["trial"], s["step"]) for s in state["steps"]} == {(n, 1) for n in range(1, COUNT + 1)}

        # the runs, read back with the official mlflow client
        client = MlflowClient(tracking_uri=srv.url)
        exp = client.get_experiment_by_name("Default")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        parents = [r for r in runs if r.data.tags.get("imops.sweep_role") == "parent"
                   and r.data.tags.get("imops.sweep_id") == sweep_id]
        assert len(parents) == 1
        parent = parents[0].info.run_id
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
        assert sorted(r.info.run_id for r in children) == sorted(run_ids)
        by_trial = {t["trial"]: t for t in trials}
        for r in children:
            n = int(r.data.tags["imops.sweep_trial"])
            assert r.data.tags["imops.sweep_id"] == sweep_id
            assert r.info.run_id == by_trial[n]["run_id"] and r.info.status == "FINISHED"
            assert int(r.data.params["batch_size"]) == json.loads(by_trial[n]["params"])["batch_size"]
            hist = client.get_metric_history(r.info.run_id, "val_loss")
            assert len(hist) == 1 and abs(hist[0].value - by_trial[n]["objective"]) < 1e-6 * max(1, abs(hist[0].value))
        assert len(runs) == COUNT + 1

        # show / list through the server: the plots went to the parent run
        show = imops.json("sweep", "show", sweep_id, "--tracking-uri", srv.url, "--json",
                          env=machine_env(tmp_path / "viewer"))
        assert show["state"] == "FINISHED" and len(show["trials"]) == COUNT and show["best"] is not None
        arts = srv.api("GET", "mlflow/artifacts/list", params={"run_id": parent, "path": "plots"})
        assert {f["path"] for f in arts.json()["files"]} == {"plots/sweep_metric.svg", "plots/parallel_coordinates.svg"}
        assert client.get_run(parent).info.status == "FINISHED"
        listed = imops.json("sweep", "list", "--tracking-uri", srv.url, "--json", env=machine_env(tmp_path / "viewer"))
        assert [s["sweep_id"] for s in listed] == [sweep_id] and listed[0]["trials"] == COUNT

        # a further agent finds nothing left to claim
        p = subprocess.run([imops_bin, "sweep", "agent", sweep_id, "--tracking-uri", srv.url, "--json"],
                           capture_output=True, text=True, env=machine_env(tmp_path / "late"), timeout=120)
        assert p.returncode == 0, p.stderr
        assert len(srv.api("GET", "imops/sweeps/get", params={"sweep_id": sweep_id}).json()["trials"]) == COUNT
    finally:
        srv.stop()


def error(resp, status, code=None):
    assert resp.status_code == status, (resp.status_code, resp.text)
    j = resp.json()
    assert isinstance(j.get("message"), str) and j["message"]
    if code:
        assert j["error_code"] == code, j
    return j


def test_malformed_sweep_requests(imops_bin, tmp_path):
    srv = Server(imops_bin, tmp_path / "ws")
    try:
        cfg = json.dumps({"config": {"method": "random", "parameters": {"lr": {"min": 0.0, "max": 1.0}}},
                          "imops": {"seed": 3}})
        ok = srv.api("POST", "imops/sweeps/create", json={"name": "s", "config": cfg, "method": "random",
                                                          "max_trials": 2})
        assert ok.status_code == 200, ok.text
        sid = ok.json()["sweep_id"]
        bad = "INVALID_PARAMETER_VALUE"
        error(srv.api("POST", "imops/sweeps/create", json={"name": "s", "config": "[1]", "method": "random"}), 400, bad)
        wrong = json.dumps({"config": {"method": "random", "parameters": {"lr": {"min": 2, "max": 1}}}, "imops": {}})
        assert "lr" in error(srv.api("POST", "imops/sweeps/create", json={"name": "s", "config": wrong,
                                                                          "method": "random"}), 400, bad)["message"]
        error(srv.api("POST", "imops/sweeps/create", json={"name": "s", "config": cfg, "method": "tpe"}), 400, bad)
        error(srv.api("POST", "imops/sweeps/create", json={"name": "s", "config": cfg, "method": "grid",
                                                           "max_trials": -1}), 400, bad)
        error(srv.api("POST", "imops/sweeps/create", json={"config": cfg}), 400, bad)
        error(srv.api("POST", "imops/sweeps/claim", json={}), 400, bad)
        error(srv.api("POST", "imops/sweeps/claim", json={"sweep_id": "../../x", "agent_id": "a"}), 400, bad)
        error(srv.api("POST", "imops/sweeps/claim", json={"sweep_id": sid, "agent_id": "a b"}), 400, bad)
        error(srv.api("POST", "imops/sweeps/claim", json={"sweep_id": sid, "agent_id": "a", "limit": "x"}), 400, bad)
        error(srv.api("POST", "imops/sweeps/claim", json={"sweep_id": "deadbeef", "agent_id": "a"}), 404,
              "RESOURCE_DOES_NOT_EXIST")
        error(srv.api("GET", "imops/sweeps/get", params={"sweep_id": "deadbeef"}), 404, "RESOURCE_DOES_NOT_EXIST")
        error(srv.api("GET", "imops/sweeps/get"), 400, bad)
        error(srv.api("POST", "imops/sweeps/claim", data=b"{not json", headers={"Content-Type": "application/json"}),
              400)
        # the claim itself, then what the holder may and others may not do
        c = srv.api("POST", "imops/sweeps/claim", json={"sweep_id": sid, "agent_id": "a1"})
        assert c.status_code == 200 and c.json()["trial"]["trial"] == 1 and c.json()["trial"]["state"] == "CLAIMED"
        assert 0.0 <= json.loads(c.json()["trial"]["params"])["lr"] <= 1.0
        error(srv.api("POST", "imops/sweeps/report", json={"sweep_id": sid, "trial": 1, "agent_id": "a1", "step": 1,
                                                           "value": "abc"}), 400, bad)
        error(srv.api("POST", "imops/sweeps/report", json={"sweep_id": sid, "trial": 0, "agent_id": "a1", "step": 1,
                                                           "value": 1}), 400, bad)
        error(srv.api("POST", "imops/sweeps/report", json={"sweep_id": sid, "trial": 1, "agent_id": "a1", "step": 0,
                                                           "value": 1}), 400, bad)
        r = srv.api("POST", "imops/sweeps/report", json={"sweep_id": sid, "trial": 1, "agent_id": "a1", "step": 1,
                                                         "value": 0.5})
        assert r.status_code == 200 and r.json() == {"prune": False}, r.text
        other = srv.api("POST", "imops/sweeps/update-trial", json={"sweep_id": sid, "trial": 1, "agent_id": "a2",
                                                                   "state": "FINISHED", "objective": 1})
        assert "no longer held" in error(other, 409, "ABORTED")["message"]
        error(srv.api("POST", "imops/sweeps/update-trial", json={"sweep_id": sid, "trial": 1, "agent_id": "a1",
                                                                 "state": "DONE"}), 400, bad)
        error(srv.api("POST", "imops/sweeps/update-trial", json={"sweep_id": sid, "trial": 1, "agent_id": "a1",
                                                                 "objective": "x"}), 400, bad)
        fin = srv.api("POST", "imops/sweeps/update-trial", json={"sweep_id": sid, "trial": 1, "agent_id": "a1",
                                                                 "state": "FINISHED", "objective": 0.5})
        assert fin.status_code == 200, fin.text
        assert srv.api("POST", "imops/sweeps/claim", json={"sweep_id": sid, "agent_id": "a2"}).json()["trial"]["trial"] == 2
        # the cap (2): nothing more to claim
        assert srv.api("POST", "imops/sweeps/claim", json={"sweep_id": sid, "agent_id": "a3"}).json() == {}
        error(srv.api("POST", "imops/sweeps/set-state", json={"sweep_id": sid, "state": "bogus"}), 400, bad)
        error(srv.api("POST", "imops/sweeps/agent-end", json={"agent_id": "a1", "state": "RUNNING"}), 400, bad)
        lst = srv.api("GET", "imops/sweeps/list")
        assert lst.status_code == 200 and [s["sweep_id"] for s in lst.json()["sweeps"]] == [sid]
    finally:
        srv.stop()
    # writes need the token when the server has one; reads do not
    srv = Server(imops_bin, tmp_path / "ws", "--token", "s3cret")
    try:
        error(srv.api("POST", "imops/sweeps/claim", json={"sweep_id": sid, "agent_id": "a9"}), 401, "UNAUTHENTICATED")
        assert srv.api("GET", "imops/sweeps/get", params={"sweep_id": sid}).status_code == 200
        ok = srv.api("POST", "imops/sweeps/heartbeat", json={"sweep_id": sid, "trial": 2, "agent_id": "a2"},
                     headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200, ok.text
    finally:
        srv.stop()
