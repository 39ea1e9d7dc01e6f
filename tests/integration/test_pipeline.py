"""imops pipeline end to end: the surface pipeline (examples/surface/pipeline.yaml)
run locally on a tiny generated data set for every combination of its two mode
parameters (which steps ran, were skipped or came from the cache), a second
identical run all cached, a changed image rerunning preprocessing and what
follows, registration and the alias, a failing step failing the run with its
log kept, Ctrl-C cancelling the steps, bad pipeline files rejected with their
positions before anything runs, and the compiled Kubeflow YAML (the surface
pipeline, deploy/kubeflow/surface-pipeline.yaml, and a pipeline using every
feature of the format) loaded by the real kfp SDK (in .venv-kfp, see
tests/requirements-kfp.txt)."""
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SURFACE = ROOT / "examples" / "surface" / "pipeline.yaml"
KFP_PYTHON = Path(os.environ.get("KFP_PYTHON", ROOT / ".venv-kfp" / "bin" / "python"))
TINY = ["-p", "img_size=16", "-p", "epochs=1", "-p", "batch_size=8"]
MODE_STEPS = {"hyp": "hyp", "train": "train", "test": "test"}


def run(imops_bin, home, *args, check=None, timeout=300):
    env = dict(os.environ, IMOPS_HOME=str(home))
    p = subprocess.run([imops_bin, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if check is not None and p.returncode != check:
        raise AssertionError(f"imops {' '.join(map(str, args))} exited {p.returncode} (wanted {check})\n"
                             f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def pipeline(imops_bin, home, data, *params, check=0, file=SURFACE):
    p = run(imops_bin, home, "pipeline", "run", file, "-p", f"data_dir={data}", *TINY, *params, "--json",
            check=check)
    result = json.loads(p.stdout)
    return {s["name"]: s for s in result["steps"]}, result, p


def statuses(steps):
    return {name: s["status"] for name, s in steps.items()}


@pytest.fixture(scope="module")
def dataset(imops_bin, tmp_path_factory):
    """40 generated 32x32 images: every pipeline run takes a second or two."""
    d = tmp_path_factory.mktemp("pipe-data") / "surface"
    subprocess.run([imops_bin, "datagen", "surface", "--out", str(d), "--count", "40", "--size", "32", "--seed", "5",
                    "--no-sheet"], check=True, capture_output=True)
    return d


@pytest.fixture(scope="module")
def model_dir(imops_bin, dataset, tmp_path_factory):
    """A trained bundle for test mode (a plain directory works in any workspace)."""
    home = tmp_path_factory.mktemp("pipe-model-ws")
    data = tmp_path_factory.mktemp("pipe-model-data") / "surface"
    shutil.copytree(dataset, data)
    p = run(imops_bin, home, "train", "--data", data, "--img-size", 16, "--epochs", 1, "--batch-size", 8,
            "--json", check=0)
    return json.loads(p.stdout)["model_dir"]


def fresh(tmp_path, dataset):
    data = tmp_path / "surface"
    shutil.copytree(dataset, data)
    home = tmp_path / "ws"
    return home, data


@pytest.mark.parametrize("preprocess", ["yes", "no"])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_modes_then_all_cached(imops_bin, dataset, model_dir, tmp_path, preprocess, mode):
    home, data = fresh(tmp_path, dataset)
    params = ["-p", f"mode_hyp_train_test={mode}", "-p", f"preprocess_yes_no={preprocess}",
              "-p", f"model_path={model_dir}"]
    steps, result, _ = pipeline(imops_bin, home, data, *params)
    assert result["status"] == "SUCCEEDED"
    want = {"preprocess": "SUCCEEDED" if preprocess == "yes" else "SKIPPED",
            "hyp": "SKIPPED", "train": "SKIPPED", "test": "SKIPPED", "register": "SKIPPED", "alias": "SKIPPED",
            "train-best": "SKIPPED"}
    want[MODE_STEPS[mode]] = "SUCCEEDED"
    assert statuses(steps) == want
    if mode == "train":
        assert steps["train"]["outputs"]["model_uri"].startswith("runs:/")
        assert float(steps["train"]["outputs"]["best_val_accuracy"]) >= 0
    else:
        assert 0 <= float(steps["test"]["outputs"]["accuracy"]) <= 1
    assert "condition is false" in steps["hyp"]["message"]
    if preprocess == "yes":
        assert (data / "mean-std.txt").exists()
        assert len(steps["preprocess"]["outputs"]["mean_std"].splitlines()) == 6

    # The same run again: nothing reruns; outputs come back from the cache.
    again, result2, _ = pipeline(imops_bin, home, data, *params)
    assert result2["status"] == "SUCCEEDED"
    cached = {k: ("CACHED" if v == "SUCCEEDED" else v) for k, v in want.items()}
    assert statuses(again) == cached
    ran = MODE_STEPS[mode]
    assert again[ran]["outputs"] == steps[ran]["outputs"]
    assert result["pipeline_run_id"][:12] in again[ran]["message"]

    # --no-cache forces the steps to run.
    forced, _, _ = pipeline(imops_bin, home, data, *params, "--no-cache")
    assert statuses(forced) == want


def test_changed_image_reruns_preprocess_and_what_follows(imops_bin, dataset, tmp_path):
    home, data = fresh(tmp_path, dataset)
    params = ["-p", "mode_hyp_train_test=train", "-p", "preprocess_yes_no=yes"]
    first, _, _ = pipeline(imops_bin, home, data, *params)
    assert first["preprocess"]["status"] == first["train"]["status"] == "SUCCEEDED"
    second, _, _ = pipeline(imops_bin, home, data, *params)
    assert second["preprocess"]["status"] == second["train"]["status"] == "CACHED"
    # Replace one image by another one of the set.
    images = sorted((data / "Positive").iterdir())
    shutil.copyfile(images[1], images[0])
    third, _, _ = pipeline(imops_bin, home, data, *params)
    assert third["preprocess"]["status"] == "SUCCEEDED"
    assert third["train"]["status"] == "SUCCEEDED"
    assert third["preprocess"]["cache_key"] != first["preprocess"]["cache_key"]
    assert third["preprocess"]["outputs"]["content_hash"] != first["preprocess"]["outputs"]["content_hash"]
    assert third["train"]["outputs"]["run_id"] != first["train"]["outputs"]["run_id"]


def test_register_and_alias(imops_bin, dataset, tmp_path):
    home, data = fresh(tmp_path, dataset)
    steps, result, _ = pipeline(imops_bin, home, data, "-p", "register=true", "-p", "alias=candidate")
    assert statuses(steps)["register"] == statuses(steps)["alias"] == "SUCCEEDED"
    assert steps["register"]["outputs"]["version"] == "1"
    p = run(imops_bin, home, "test", "--model", "models:/surface@candidate", "--data", data, "--json", check=0)
    assert json.loads(p.stdout)["n"] > 0
    # Registration has side effects, so it is not cached: a second run registers version 2.
    steps, _, _ = pipeline(imops_bin, home, data, "-p", "register=true", "-p", "alias=candidate")
    assert steps["train"]["status"] == "CACHED"
    assert steps["register"]["status"] == "SUCCEEDED"
    assert steps["register"]["outputs"]["version"] == "2"


def test_failing_step_fails_the_run_and_keeps_its_log(imops_bin, dataset, tmp_path):
    home, data = fresh(tmp_path, dataset)
    steps, result, p = pipeline(imops_bin, home, data, "-p", "mode_hyp_train_test=test",
                                "-p", f"model_path={tmp_path / 'no-such-model'}", check=1)
    assert result["status"] == "FAILED"
    assert steps["preprocess"]["status"] == "SUCCEEDED"
    assert steps["test"]["status"] == "FAILED"
    assert "exit status 1" in steps["test"]["message"]
    assert "[test]" in p.stderr and "no-such-model" in p.stderr  # streamed live with the prefix
    rid = result["pipeline_run_id"]
    log = run(imops_bin, home, "pipeline", "runs", "show", rid[:10], "--logs", "test", check=0).stdout
    assert "no-such-model" in log
    shown = json.loads(run(imops_bin, home, "pipeline", "runs", "show", rid, "--json", check=0).stdout)
    assert shown["status"] == "FAILED"
    assert {s["name"]: s["status"] for s in shown["steps"]}["test"] == "FAILED"
    listed = json.loads(run(imops_bin, home, "pipeline", "runs", "list", "--json", check=0).stdout)
    assert [r["pipeline_run_id"] for r in listed["pipeline_runs"]] == [rid]
    table = run(imops_bin, home, "pipeline", "runs", "show", rid, check=0).stdout
    assert "FAILED" in table and "preprocess" in table
    # The tracked run holds the parameters.
    tracked = json.loads(run(imops_bin, home, "runs", "show", result["run_id"], "--json", check=0).stdout)
    assert "mode_hyp_train_test" in json.dumps(tracked)


def test_step_failure_cancels_dependants(imops_bin, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("name: fail\nsteps:\n"
                 "  a: {args: [preprocess, --data, /nonexistent/dir, --img-size, 16], retries: 1}\n"
                 "  b: {args: [version], after: [a]}\n"
                 "  c: {args: [version]}\n")
    p = run(imops_bin, tmp_path / "ws", "pipeline", "run", f, "--json", check=1)
    r = json.loads(p.stdout)
    st = {s["name"]: s for s in r["steps"]}
    assert st["a"]["status"] == "FAILED" and st["a"]["attempts"] == 2
    assert st["b"]["status"] == "CANCELED" and "upstream step 'a' failed" in st["b"]["message"]
    assert st["c"]["status"] == "SUCCEEDED"


def test_ctrl_c_cancels(imops_bin, tmp_path):
    f = tmp_path / "slow.yaml"
    f.write_text("name: slow\nsteps:\n  slow: {args: [-c, 'echo started; sleep 60']}\n"
                 "  next: {args: [-c, 'echo never'], after: [slow]}\n")
    env = dict(os.environ, IMOPS_HOME=str(tmp_path / "ws"))
    proc = subprocess.Popen([imops_bin, "pipeline", "run", str(f), "--binary", "/bin/sh", "--grace", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(1000):  # until the step has started (bounded)
            line = proc.stdout.readline()
            if "[slow] started" in line or not line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "CANCELED" in out
    listed = json.loads(run(imops_bin, tmp_path / "ws", "pipeline", "runs", "list", "--json", check=0).stdout)
    run0 = listed["pipeline_runs"][0]
    assert run0["status"] == "CANCELED"
    assert {s["name"]: s["status"] for s in run0["steps"]} == {"slow": "CANCELED", "next": "CANCELED"}


BAD_FILES = [
    ("name: b\nsteps:\n  a: {args: [x], after: [b]}\n  b: {args: [y], after: [a]}\n", "3:3: dependency cycle"),
    ("name: b\nsteps:\n  a: {args: [x], after: [nope]}\n", "3:26: after: unknown step 'nope'"),
    ("name: b\nsteps:\n  a: {args: ['{{params.zz}}']}\n", "3:14: args: unknown parameter 'zz'"),
    ("name: b\nparameters:\n  m: {enum: [x, y]}\nsteps:\n  a: {args: [v], when: \"params.m == 'x' and\"}\n",
     "5:24: when: column 20: expected a value, found the end"),
    ("name: b\nparameters:\n  m: {enum: [x, y], default: z}\nsteps:\n  a: {args: [v]}\n",
     "3:30: default of parameter 'm' is not one of its allowed values"),
    ("name: b\nsteps:\n  a: {args: [v], retry: 2}\n", "3:18: unknown key 'retry'"),
    ("name: b\nparameters:\n  n: {type: int, default: many}\nsteps:\n  a: {args: [v]}\n", "3:27: default of parameter 'n' is not a int"),
]


@pytest.mark.parametrize("text,needle", BAD_FILES)
def test_bad_files_rejected_with_positions(imops_bin, tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    home = tmp_path / "ws"
    p = run(imops_bin, home, "pipeline", "run", f, check=2)
    assert f"{f}:{needle}" in p.stderr
    assert run(imops_bin, home, "pipeline", "validate", f).returncode == 2
    listed = json.loads(run(imops_bin, home, "pipeline", "runs", "list", "--json", check=0).stdout)
    assert listed["pipeline_runs"] == []  # nothing ran


@pytest.mark.parametrize("params,needle", [
    (["-p", "mode_hyp_train_test=deploy"], "must be one of hyp, train, test, not 'deploy'"),
    (["-p", "epochs=many"], "parameter 'epochs' is a int, not 'many'"),
    (["-p", "colour=red"], "unknown parameter 'colour'"),
])
def test_bad_parameters_rejected(imops_bin, tmp_path, params, needle):
    p = run(imops_bin, tmp_path / "ws", "pipeline", "run", SURFACE, *params, check=2)
    assert needle in p.stderr
    assert "pipeline.yaml:" in p.stderr or "unknown parameter" in p.stderr


def test_missing_required_parameter(imops_bin, tmp_path):
    f = tmp_path / "req.yaml"
    f.write_text("name: r\nparameters:\n  who: {type: string}\nsteps:\n  a: {args: [version]}\n")
    p = run(imops_bin, tmp_path / "ws", "pipeline", "run", f, check=2)
    assert "parameter 'who' is required" in p.stderr and f"{f}:3:3" in p.stderr
    run(imops_bin, tmp_path / "ws", "pipeline", "run", f, "-p", "who=me", check=0)


def test_hyp_mode(imops_bin, dataset, tmp_path):
    """Tested last: `imops sweep run` and examples/surface/sweep.yaml come from the sweeps work."""
    if run(imops_bin, tmp_path, "sweep", "--help").returncode != 0 or not (ROOT / "examples/surface/sweep.yaml").exists():
        pytest.skip("imops sweep run / examples/surface/sweep.yaml are not in this tree yet")
    home, data = fresh(tmp_path, dataset)
    steps, result, _ = pipeline(imops_bin, home, data, "-p", "mode_hyp_train_test=hyp", "-p", "hyp_train_best=true",
                                "-p", f"sweep_config={ROOT / 'examples/surface/sweep.yaml'}", "-p", "sweep_trials=2")
    assert statuses(steps) == {"preprocess": "SUCCEEDED", "hyp": "SUCCEEDED", "train": "SKIPPED", "test": "SKIPPED",
                               "register": "SKIPPED", "alias": "SKIPPED", "train-best": "SUCCEEDED"}
    # the sweep's best parameters went into the final training run
    sweep = json.loads(run(imops_bin, home, "sweep", "show", steps["hyp"]["outputs"]["sweep_id"], "--json").stdout)
    best = sweep["best"]["params"]
    assert steps["train-best"]["outputs"]["model_uri"].startswith("runs:/")
    tr = json.loads(run(imops_bin, home, "runs", "show", steps["train-best"]["outputs"]["run_id"], "--json").stdout)
    got = tr.get("params") or tr.get("run", {}).get("data", {}).get("params")
    got = {p["key"]: p["value"] for p in got} if isinstance(got, list) else got
    for k in ("optimizer", "batch_size"):
        if k in best:
            assert str(got[k]) == str(best[k]), (k, got, best)
    log = run(imops_bin, home, "pipeline", "runs", "show", result["pipeline_run_id"], "--logs", "hyp", check=0).stdout
    assert "trial  state" in log and '"sweep_id"' in log  # the live table, then the JSON summary
    assert sweep["counts"]["finished"] + sweep["counts"]["pruned"] == 2
    again, _, _ = pipeline(imops_bin, home, data, "-p", "mode_hyp_train_test=hyp", "-p", "hyp_train_best=true",
                           "-p", f"sweep_config={ROOT / 'examples/surface/sweep.yaml'}", "-p", "sweep_trials=2")
    assert again["hyp"]["status"] == "CACHED" and again["train-best"]["status"] == "CACHED"


# ---- Kubeflow ------------------------------------------------------------------------------
def kfp_load(path):
    if not KFP_PYTHON.exists():
        pytest.fail(f"{KFP_PYTHON} missing: run 'make venv' (it installs tests/requirements-kfp.txt into .venv-kfp)")
    p = subprocess.run([str(KFP_PYTHON), str(ROOT / "tests/integration/kfp_check.py"), str(path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_kfp_surface(imops_bin, tmp_path):
    out = tmp_path / "surface.yaml"
    run(imops_bin, tmp_path, "pipeline", "compile", SURFACE, "--target", "kfp", "-o", out, "--image", "reg/imops:9",
        check=0)
    k = kfp_load(out)
    assert k["name"] == "surface" and k["schema"] == "2.1.0"
    # preprocess, hyp, train, test, register and alias are each wrapped in a condition (dsl.If)
    assert sorted(k["tasks"]) == sorted(f"condition-{i}" for i in range(1, 8))
    assert k["conditions"]["condition-1"] == "inputs.parameter_values['pipelinechannel--preprocess_yes_no'] == 'yes'"
    assert k["conditions"]["condition-3"] == "inputs.parameter_values['pipelinechannel--mode_hyp_train_test'] == 'train'"
    for c in ("condition-2", "condition-3", "condition-4"):
        assert k["tasks"][c]["deps"] == ["condition-1"]  # after preprocess, which may be skipped
    assert k["tasks"]["condition-6"]["deps"] == ["condition-5"]
    ex = k["executors"]
    assert ex["exec-train"]["image"] == "reg/imops:9"
    assert ex["exec-train"]["command"] == ["/usr/local/bin/imops"]
    assert ex["exec-train"]["gpus"] == "1" and ex["exec-train"]["memory"] == "16Gi"
    assert "{{$.inputs.parameters['epochs']}}" in ex["exec-train"]["args"]
    assert "model_uri={{$.outputs.parameters['model_uri'].output_file}}" in ex["exec-train"]["args"]
    assert "{{$.inputs.parameters['train-model_uri']}}" in ex["exec-register"]["args"]
    assert k["params"]["epochs"] == {"type": "NUMBER_INTEGER", "default": 5.0}
    assert k["params"]["register"] == {"type": "BOOLEAN", "default": False}
    assert k["params"]["mode_hyp_train_test"]["default"] == "train"
    assert k["mounts"]["exec-train"] == [["/workspace", "workspace-surface"]]
    assert set(k["mounts"]) == set(ex)


def test_deploy_copy_is_current(imops_bin, tmp_path):
    """deploy/kubeflow/surface-pipeline.yaml is what the compiler makes today (see deploy/kubeflow/README.md)."""
    out = tmp_path / "surface.yaml"
    run(imops_bin, tmp_path, "pipeline", "compile", SURFACE, "--target", "kfp", "-o", out, "--image",
        "imops:0.1.0", "--pvc", "workspace-surface", check=0)
    assert out.read_text() == (ROOT / "deploy/kubeflow/surface-pipeline.yaml").read_text()
    kfp_load(ROOT / "deploy/kubeflow/surface-pipeline.yaml")


EVERY_FEATURE = """\
name: every-feature
description: every key of the pipeline format
parameters:
  mode: {type: string, enum: [a, b], default: a, description: a choice}
  n: {type: int, default: 3}
  x: {type: float, default: 0.5}
  flag: {type: bool, default: true}
  who: {type: string}
steps:
  first:
    description: outputs from JSON and from files
    args: [preprocess, --data, '/d/{{params.who}}', --json]
    inputs: [{path: /tmp, include: ['*.jpg'], exclude: [x]}, /etc/hostname]
    outputs:
      hash: {json: content_hash}
      text: {file: '/d/{{params.mode}}.txt'}
      nested: {file: /d/r.json, json: a.b}
    resources: {cpu: 500m, memory: 2Gi, gpus: 2, gpu_type: amd.com/gpu}
    retries: 3
  second:
    args: [train, --data, '{{steps.first.outputs.hash}}', --epochs, '{{params.n}}']
    when: "(params.n == 3 and params.x != 1.5) or not params.flag"
    cache: false
    outputs: {uri: {json: model_uri}}
  third:
    args: [test, '--model={{steps.second.outputs.uri}}']
    after: [first]
    when: "params.mode not in ['b'] and steps.first.outputs.text != 'skip'"
  fourth:
    args: [version]
    after: [third, second]
"""


def test_kfp_every_feature(imops_bin, tmp_path):
    f = tmp_path / "every.yaml"
    f.write_text(EVERY_FEATURE)
    out = tmp_path / "every-kfp.yaml"
    run(imops_bin, tmp_path, "pipeline", "compile", f, "--target", "kfp", "-o", out, "--pvc", "ws",
        "--mount-path", "/mnt/ws", check=0)
    k = kfp_load(out)
    assert k["name"] == "every-feature"
    assert sorted(k["tasks"]) == ["condition-1", "condition-2", "first", "fourth"]
    assert k["tasks"]["first"]["retries"] == 3 and k["tasks"]["first"]["cache"] is True
    assert k["tasks"]["fourth"]["deps"] == ["condition-1", "condition-2"]
    assert k["tasks"]["condition-2"]["deps"] == ["condition-1", "first"]
    assert k["conditions"]["condition-1"] == (
        "(int(inputs.parameter_values['pipelinechannel--n']) == 3 && "
        "double(inputs.parameter_values['pipelinechannel--x']) != 1.5) || "
        "!(inputs.parameter_values['pipelinechannel--flag'] == true)")
    assert k["conditions"]["condition-2"] == (
        "!(inputs.parameter_values['pipelinechannel--mode'] in ['b']) && "
        "inputs.parameter_values['pipelinechannel--first-text'] != 'skip'")
    ex = k["executors"]["exec-first"]
    assert ex["cpu"] == "500m" and ex["memory"] == "2Gi" and ex["gpus"] == "2"
    assert "text=/d/{{$.inputs.parameters['mode']}}.txt" in ex["args"]
    assert "nested=a.b" in ex["args"]
    assert k["params"]["who"] == {"type": "STRING", "default": None}
    assert k["params"]["x"] == {"type": "NUMBER_DOUBLE", "default": 0.5}
    assert k["mounts"]["exec-fourth"] == [["/mnt/ws", "ws"]]
    # The file also runs locally as far as its commands allow: validate accepts it.
    run(imops_bin, tmp_path, "pipeline", "validate", f, "-p", "who=me", check=0)


def test_exec_writes_kfp_outputs(imops_bin, dataset, tmp_path):
    """What a compiled step runs in its container: the command, then outputs into KFP's files."""
    home, data = fresh(tmp_path, dataset)
    out = tmp_path / "outputs" / "content_hash"
    mean = tmp_path / "outputs" / "mean_std"
    run(imops_bin, home, "pipeline", "exec", "--output", f"content_hash={out}", "--json-key", "content_hash=content_hash",
        "--output", f"mean_std={mean}", "--file", f"mean_std={data}/mean-std.txt",
        "--", "preprocess", "--data", data, "--img-size", 16, "--json", check=0)
    assert len(out.read_text()) == 16
    assert len(mean.read_text().splitlines()) == 6
    p = run(imops_bin, home, "pipeline", "exec", "--output", f"x={tmp_path / 'x'}", "--json-key", "x=nope",
            "--", "version", check=1)
    assert "x" in p.stderr
