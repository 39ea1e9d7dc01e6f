"""imops sweep end to end on a tiny generated surface set: a bayes sweep with
hyperband run by two agent processes (4 trials, 1-2 epochs at 32-48 px),
`sweep show --json` (every trial a tracked child run of the sweep's parent
run, tagged with the sweep), the plots as artifacts, the Katib export parsed
by PyYAML, `train --params-from-sweep`, agents sharing a sweep created with
`sweep create`, and config errors that name file:line:col and the key."""
import json
import re
from pathlib import Path

import pytest
import yaml

SWEEP = """\
name: tiny-surface
method: bayes
metric: {name: val_loss, goal: minimize}
parameters:
  batch_size: {values: [8, 16]}
  img_size: {values: [32, 48]}
  lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}
  optimizer: {values: [adam, sgd]}
  epochs: {value: 2}
early_terminate: {type: hyperband, min_iter: 1, eta: 2}
run_cap: 4
"""


@pytest.fixture(scope="module")
def setup(imops, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    data = root / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 48, "--size", 64, "--seed", 5, "--no-sheet")
    cfg = root / "sweep.yaml"
    cfg.write_text(SWEEP)
    return root, data, cfg, {"IMOPS_HOME": str(root / "ws"), "IMOPS_NUM_THREADS": "1"}


def test_sweep_run_show_train(imops, setup):
    root, data, cfg, env = setup
    p = imops.run("sweep", "run", cfg, "--data", data, "--count", 4, "--parallel", 2, "--seed", 3, env=env)
    assert "trial" in p.stdout and "best" in p.stdout
    sweep_id = p.stdout.strip().splitlines()[-1].split()[-1]
    show = imops.json("sweep", "show", sweep_id, env=env)
    assert show["sweep_id"] == sweep_id and show["state"] == "FINISHED"
    trials = show["trials"]
    assert [t["trial"] for t in trials] == [1, 2, 3, 4]
    assert all(t["state"] in ("FINISHED", "PRUNED") for t in trials)
    assert show["best"] is not None and show["best"]["state"] == "FINISHED"
    finished = [t["value"] for t in trials if t["state"] == "FINISHED"]
    assert show["best"]["value"] == min(finished)
    assert {i["parameter"] for i in show["importance"]} == {"batch_size", "img_size", "lr", "optimizer"}
    for path in show["plots"]:
        assert Path(path).read_text().startswith("<svg")
    parent = show["parent_run_id"]
    for t in trials:
        assert set(t["params"]) == {"batch_size", "img_size", "lr", "optimizer", "epochs"}
        run = imops.json("runs", "show", t["run_id"], env=env)["run"]
        tags = {x["key"]: x["value"] for x in run["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent
        assert tags["imops.sweep_id"] == sweep_id and tags["imops.sweep_trial"] == str(t["trial"])
        params = {x["key"]: x["value"] for x in run["data"]["params"]}
        assert int(params["batch_size"]) == t["params"]["batch_size"]
        assert params["optimizer"] == t["params"]["optimizer"]
        if t["state"] == "PRUNED":
            assert tags["imops.sweep_pruned"] == "true"
    listed = imops.json("sweep", "list", env=env)
    assert any(s["sweep_id"] == sweep_id and s["trials"] == 4 for s in listed)

    # closing the loop: the best trial's parameters, with an explicit option winning
    best = show["best"]["params"]
    p = imops.run("train", "--data", data, "--params-from-sweep", sweep_id, "--epochs", 1, "--json", env=env)
    assert f"parameters from sweep {sweep_id}" in p.stderr
    assert f"--batch-size={best['batch_size']}" in p.stderr and "--epochs" in p.stderr.split("instead:")[1]
    res = json.loads(p.stdout)
    run = imops.json("runs", "show", res["run_id"], env=env)["run"]
    params = {x["key"]: x["value"] for x in run["data"]["params"]}
    assert int(params["batch_size"]) == best["batch_size"] and int(params["img_size"]) == best["img_size"]
    assert params["optimizer"] == best["optimizer"] and int(params["epochs"]) == 1
    assert abs(float(params["lr"]) - best["lr"]) < 1e-6 * best["lr"]


def test_create_and_agents(imops, setup):
    root, data, cfg, env = setup
    grid = root / "grid.yaml"
    grid.write_text("method: grid\nmetric: {name: val_accuracy, goal: maximize}\nparameters:\n"
                    "  optimizer: {values: [sgd, adam]}\n  lr: {values: [0.01, 0.05]}\n"
                    "  img_size: {value: 32}\n  epochs: {value: 1}\n")
    sweep_id = imops.run("sweep", "create", grid, "--data", data, env=env).stdout.strip()
    imops.run("sweep", "agent", sweep_id, "--count", 1, env=env)
    imops.run("sweep", "agent", sweep_id, env=env)
    show = imops.json("sweep", "show", sweep_id, env=env)
    got = [(t["params"]["optimizer"], t["params"]["lr"]) for t in show["trials"]]
    assert got == [("sgd", 0.01), ("sgd", 0.05), ("adam", 0.01), ("adam", 0.05)]
    assert show["state"] == "FINISHED"


def test_katib_export(imops, setup, tmp_path):
    root, data, cfg, env = setup
    out = tmp_path / "experiment.yaml"
    imops.run("sweep", "export-katib", cfg, "-o", out, "--parallel", 2, env=env)
    doc = yaml.safe_load(out.read_text())
    assert doc["apiVersion"] == "kubeflow.org/v1beta1" and doc["kind"] == "Experiment"
    spec = doc["spec"]
    assert spec["objective"] == {"type": "minimize", "objectiveMetricName": "val_loss",
                                 "additionalMetricNames": ["val_accuracy", "train_loss", "train_accuracy"]}
    assert spec["algorithm"]["algorithmName"] == "tpe"
    assert spec["parallelTrialCount"] == 2 and spec["maxTrialCount"] == 4
    params = {p["name"]: p for p in spec["parameters"]}
    assert params["lr"] == {"name": "lr", "parameterType": "double",
                            "feasibleSpace": {"min": "0.001", "max": "0.1", "distribution": "logUniform"}}
    assert params["batch_size"]["parameterType"] == "discrete"
    assert params["batch_size"]["feasibleSpace"]["list"] == ["8", "16"]
    assert params["optimizer"]["feasibleSpace"]["list"] == ["adam", "sgd"]
    assert "epochs" not in params
    tmpl = spec["trialTemplate"]
    job = tmpl["trialSpec"]
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["imops", "train"] and "--lr=${trialParameters.lr}" in command and "--epochs=2" in command
    assert {t["name"] for t in tmpl["trialParameters"]} == set(params)
    assert spec["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"

    # the trial command, run here as Katib would run it, prints what Katib's StdOut collector parses
    values = {"lr": "0.01", "batch_size": "8", "img_size": "32", "optimizer": "adam"}
    argv = []
    for a in command[2:]:
        for k, v in values.items():
            a = a.replace("${trialParameters.%s}" % k, v)
        argv.append(f"--data={data}" if a.startswith("--data=") else a)
    assert not any("${" in a for a in argv)
    p = imops.run("train", *argv, env=env)
    found = dict((m.group(1), float(m.group(2))) for m in
                 re.finditer(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)", p.stdout) if m.group(2))
    assert spec["objective"]["objectiveMetricName"] in found and "val_accuracy" in found


def test_config_errors(imops, setup, tmp_path):
    root, data, cfg, env = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: random\nparameters:\n  lr: {min: 0.5, max: 0.1}\n")
    p = imops.run("sweep", "create", bad, "--data", data, check=False, env=env)
    assert p.returncode == 2 and f"{bad}:3:7: parameters.lr: min (0.5) must be less than max" in p.stderr
    bad.write_text("method: random\nparameters:\n  dropout_rate: {values: [0.1]}\n")
    p = imops.run("sweep", "create", bad, "--data", data, check=False, env=env)
    assert p.returncode == 2 and "parameters.dropout_rate: training has no parameter" in p.stderr
    bad.write_text("method: random\nmetrik: {name: x}\nparameters:\n  lr: {value: 1}\n")
    p = imops.run("sweep", "create", bad, "--data", data, check=False, env=env)
    assert p.returncode == 2 and f"{bad}:2:1: metrik: unknown key" in p.stderr
