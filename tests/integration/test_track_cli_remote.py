"""imops experiments / runs / models against a tracking server: the same commands
with --tracking-uri http://... (or MLFLOW_TRACKING_URI) go through MLflow's REST
API to `imops server` (started here on a free loopback port) and print what the
same commands print over the server's own workspace (--json compared field by
field); writes (create, register, alias, stage, delete) made remotely are seen
locally and by the official mlflow client; unknown names fail with a clear
message."""
import json
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")
mlflow = pytest.importorskip("mlflow", reason="mlflow (tests/requirements.txt) is not installed")
from mlflow import MlflowClient  # noqa: E402

from test_mlflow_client import Server  # noqa: E402

# Where the server shows its own store's locations as URIs of its artifact proxy.
URI_KEYS = {"artifact_location", "artifact_uri"}


def strip_uris(j):
    """The JSON without artifact locations (the server hands out mlflow-artifacts:/ URIs
    for what the workspace stores as file:// ones)."""
    if isinstance(j, dict):
        return {k: strip_uris(v) for k, v in j.items() if k not in URI_KEYS}
    if isinstance(j, list):
        return [strip_uris(v) for v in j]
    return j


@pytest.fixture(scope="module")
def served(imops, imops_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("trkremote")
    data = root / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 60, "--size", 32, "--seed", 5, "--no-sheet")
    imops.run("preprocess", "--data", data, "--img-size", 32)
    srv = Server(imops_bin, root / "srv-ws")
    try:
        runs = []
        for i, lr in enumerate((0.01, 0.02)):
            r = imops.json("train", "--data", data, "--model", "smallcnn", "--epochs", 1, "--batch-size", 16,
                           "--lr", lr, "--experiment", "remote-cli", "--run-name", f"r{i}", "--output",
                           root / f"out{i}", "--tracking-uri", srv.url, env={"IMOPS_HOME": str(root / "unused")},
                           timeout=900)
            runs.append(r["run_id"])
        yield {"srv": srv, "runs": runs, "root": root,
               "local": {"IMOPS_HOME": str(root / "srv-ws")}, "unused": {"IMOPS_HOME": str(root / "unused")}}
    finally:
        srv.stop()


def both(imops, s, *args):
    """(remote --json, local --json) of the same command."""
    remote = imops.json(*args, "--tracking-uri", s["srv"].url, env=s["unused"])
    local = imops.json(*args, env=s["local"])
    return remote, local


def test_list_and_show_match_local(imops, served):
    s = served
    for args in (("experiments", "list"), ("experiments", "list", "--all"),
                 ("experiments", "list", "--filter", "name LIKE 'remote%'"),
                 ("experiments", "show", "remote-cli"),
                 ("runs", "list"), ("runs", "list", "--experiment", "remote-cli"),
                 ("runs", "list", "--filter", "params.lr = '0.02'", "--order-by", "metrics.val_accuracy DESC"),
                 ("runs", "list", "--max", "1", "--order-by", "attributes.run_name"),
                 ("runs", "show", s["runs"][0]), ("runs", "compare", *s["runs"])):
        remote, local = both(imops, s, *args)
        assert strip_uris(remote) == strip_uris(local), args
    remote, _ = both(imops, s, "runs", "list", "--experiment", "remote-cli")
    assert sorted(r["info"]["run_id"] for r in remote["runs"]) == sorted(s["runs"])
    one, _ = both(imops, s, "runs", "list", "--filter", "params.lr = '0.02'")
    assert [r["info"]["run_name"] for r in one["runs"]] == ["r1"]
    # remote runs show through the server's public artifact URIs
    remote, _ = both(imops, s, "runs", "show", s["runs"][0])
    assert remote["run"]["info"]["artifact_uri"].startswith("mlflow-artifacts:")
    # table output: same text (the artifact location column apart)
    t_remote = imops.run("runs", "list", "--experiment", "remote-cli", "--tracking-uri", s["srv"].url,
                         env=s["unused"]).stdout
    t_local = imops.run("runs", "list", "--experiment", "remote-cli", env=s["local"]).stdout
    assert t_remote == t_local and s["runs"][0] in t_remote
    # nothing went into a local workspace
    assert not (s["root"] / "unused" / "imops.db").exists()


def test_registry_writes_through_the_server(imops, served):
    s = served
    url, env = s["srv"].url, dict(s["unused"], MLFLOW_TRACKING_URI=s["srv"].url)  # the env var works too
    v1 = imops.json("models", "register", s["runs"][0], "remote-model", env=env)["model_version"]
    v2 = imops.json("models", "register", f"runs:/{s['runs'][1]}/model", "remote-model", env=env)["model_version"]
    assert (v1["version"], v2["version"]) == ("1", "2") and v2["run_id"] == s["runs"][1]
    assert v1["source"] == f"runs:/{s['runs'][0]}/model"
    imops.run("models", "alias", "remote-model", "champion", "1", env=env)
    st = imops.json("models", "stage", "remote-model", "2", "Production", "--archive-existing", env=env)
    assert st["model_version"]["current_stage"] == "Production"
    for args in (("models", "list"), ("models", "versions", "remote-model"), ("models", "latest", "remote-model"),
                 ("models", "latest", "remote-model", "Production")):
        remote, local = both(imops, s, *args)
        assert strip_uris(remote) == strip_uris(local), args
    vs, _ = both(imops, s, "models", "versions", "remote-model")
    assert [v["version"] for v in vs["model_versions"]] == ["2", "1"]
    assert vs["model_versions"][1]["aliases"] == ["champion"]
    lat, _ = both(imops, s, "models", "latest", "remote-model", "Production")
    assert [v["version"] for v in lat["model_versions"]] == ["2"]
    # the official client sees the same registry
    c = MlflowClient(url)
    assert c.get_model_version_by_alias("remote-model", "champion").version == "1"
    assert c.get_registered_model("remote-model").name == "remote-model"
    # a models:/ URI made remotely resolves through the server
    imops.run("models", "alias", "remote-model", "champion", "--delete", env=env)
    assert "champion" not in imops.run("models", "versions", "remote-model", env=s["local"]).stdout
    imops.run("models", "delete", "remote-model", "1", env=env)
    remote, local = both(imops, s, "models", "versions", "remote-model")
    assert [v["version"] for v in remote["model_versions"]] == ["2"] and strip_uris(remote) == strip_uris(local)
    imops.run("models", "delete", "remote-model", env=env)
    remote, _ = both(imops, s, "models", "list")
    assert remote["registered_models"] == []


def test_experiments_create_and_delete_remotely(imops, served):
    s = served
    url = s["srv"].url
    e = imops.json("experiments", "create", "made-remotely", "--tracking-uri", url, env=s["unused"])
    local = imops.json("experiments", "show", "made-remotely", env=s["local"])["experiment"]
    assert local["experiment_id"] == e["experiment_id"]
    out = imops.run("experiments", "delete", "made-remotely", "--tracking-uri", url, env=s["unused"]).stdout
    assert f"(id {e['experiment_id']})" in out
    assert imops.json("experiments", "show", e["experiment_id"], env=s["local"])["experiment"]["lifecycle_stage"] == "deleted"


def test_clear_errors(imops, served):
    s = served
    url = s["srv"].url
    for args, what in ((("runs", "show", "0" * 32), "0" * 32), (("experiments", "show", "nope"), "nope"),
                       (("models", "versions", "no-such-model"), "no-such-model"),
                       (("runs", "list", "--experiment", "nope"), "nope"),
                       (("models", "register", "0" * 32, "m"), "0" * 32)):
        p = imops.run(*args, "--tracking-uri", url, check=False, env=s["unused"])
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert p.stderr.startswith(f"imops {args[0]}:") and what in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    p = imops.run("runs", "list", "--filter", "metrics.x >", "--tracking-uri", url, check=False, env=s["unused"])
    assert p.returncode == 1 and "filter" in p.stderr.lower(), p.stderr


def test_against_mlflow_server(imops, tmp_path):
    """The same commands against a real `mlflow server` (SQLite backend, proxied artifacts):
    lists, show, register (a runs:/ source that mlflow hands back as it is), aliases, stages,
    and an ONNX export of models:/NAME@ALIAS logged into the run there."""
    from test_tracking_uri import MlflowServer
    data = tmp_path / "surface"
    imops.run("datagen", "surface", "--out", data, "--count", 40, "--size", 32, "--seed", 4, "--no-sheet")
    imops.run("preprocess", "--data", data, "--img-size", 32)
    srv = MlflowServer(tmp_path)
    env = {"IMOPS_HOME": str(tmp_path / "ws")}
    url = srv.url
    try:
        rid = imops.json("train", "--data", data, "--model", "smallcnn", "--epochs", 1, "--experiment", "mlf",
                         "--output", tmp_path / "out", "--tracking-uri", url, env=env, timeout=900)["run_id"]
        mlflow.set_tracking_uri(url)
        c = MlflowClient(url)
        exps = imops.json("experiments", "list", "--tracking-uri", url, env=env)["experiments"]
        assert sorted(e["name"] for e in exps) == sorted(e.name for e in c.search_experiments())
        runs = imops.json("runs", "list", "--experiment", "mlf", "--filter", "params.model = 'smallcnn'",
                          "--tracking-uri", url, env=env)["runs"]
        assert [r["info"]["run_id"] for r in runs] == [rid]
        show = imops.json("runs", "show", rid, "--tracking-uri", url, env=env)["run"]
        metrics = {m["key"]: m["value"] for m in show["data"]["metrics"]}
        assert metrics["val_accuracy"] == c.get_run(rid).data.metrics["val_accuracy"]
        env_uri = dict(env, MLFLOW_TRACKING_URI=url)
        assert imops.json("models", "register", rid, "mm", env=env_uri)["model_version"]["version"] == "1"
        assert imops.json("models", "register", rid, "mm", env=env_uri)["model_version"]["version"] == "2"
        imops.run("models", "alias", "mm", "champ", "1", env=env_uri)
        imops.run("models", "stage", "mm", "2", "Staging", env=env_uri)
        assert c.get_model_version_by_alias("mm", "champ").version == "1"
        vs = imops.json("models", "versions", "mm", env=env_uri)["model_versions"]
        assert [(v["version"], v["current_stage"]) for v in vs] == [("2", "Staging"), ("1", "None")]
        lat = imops.json("models", "latest", "mm", "Staging", env=env_uri)["model_versions"]
        assert [v["version"] for v in lat] == ["2"]
        e = imops.json("export", "onnx", "models:/mm@champ", tmp_path / "m.onnx", env=env_uri)
        assert e["tracked"] and e["run_id"] == rid
        assert "model/model.onnx" in {a.path for a in c.list_artifacts(rid, "model")}
        got = Path(mlflow.artifacts.download_artifacts(f"runs:/{rid}/model/model.onnx", dst_path=str(tmp_path / "dl"),
                                                       tracking_uri=url))
        assert got.read_bytes() == (tmp_path / "m.onnx").read_bytes()
        imops.run("models", "delete", "mm", env=env_uri)
        assert imops.json("models", "list", env=env_uri)["registered_models"] == []
    finally:
        srv.stop()
