"""The tracking store and registry from the shell: imops experiments / runs / models."""
import json


def env(tmp_path):
    return {"IMOPS_HOME": str(tmp_path / "ws")}


def test_experiments(imops, tmp_path):
    e = env(tmp_path)
    out = json.loads(imops.run("experiments", "list", "--json", env=e).stdout)
    assert [x["name"] for x in out["experiments"]] == ["Default"]
    assert imops.json("experiments", "create", "surface", env=e)["experiment_id"] == "1"
    p = imops.run("experiments", "create", "surface", env=e, check=False)
    assert p.returncode == 1 and "already exists" in p.stderr
    table = imops.run("experiments", "list", env=e).stdout
    assert "surface" in table and "Default" in table
    out = json.loads(imops.run("experiments", "list", "--filter", "name LIKE 'surf%'", "--json", env=e).stdout)
    assert [x["name"] for x in out["experiments"]] == ["surface"]
    imops.run("experiments", "delete", "surface", env=e)
    out = json.loads(imops.run("experiments", "list", "--json", env=e).stdout)
    assert [x["name"] for x in out["experiments"]] == ["Default"]
    out = json.loads(imops.run("experiments", "list", "--all", "--json", env=e).stdout)
    assert {x["lifecycle_stage"] for x in out["experiments"]} == {"active", "deleted"}


def test_registry(imops, tmp_path):
    e = env(tmp_path)
    v1 = imops.json("models", "register", f"file://{tmp_path}/m1", "surface", env=e)["model_version"]
    assert v1["version"] == "1" and v1["current_stage"] == "None"
    imops.run("models", "register", str(tmp_path / "m2"), "surface", env=e)
    imops.run("models", "alias", "surface", "production", "1", env=e)
    imops.run("models", "stage", "surface", "2", "Staging", env=e)
    vs = json.loads(imops.run("models", "versions", "surface", "--json", env=e).stdout)["model_versions"]
    assert [v["version"] for v in vs] == ["2", "1"]
    assert vs[1]["aliases"] == ["production"] and vs[0]["current_stage"] == "Staging"
    # moving the alias
    imops.run("models", "alias", "surface", "production", "2", env=e)
    ms = json.loads(imops.run("models", "list", "--json", env=e).stdout)["registered_models"]
    assert ms[0]["aliases"] == [{"alias": "production", "version": "2"}]
    # unknown things are clear errors
    p = imops.run("models", "register", "0" * 32, "surface", env=e, check=False)
    assert p.returncode == 1 and "not found" in p.stderr
    p = imops.run("models", "alias", "surface", "x", "99", env=e, check=False)
    assert p.returncode == 1
    p = imops.run("models", "stage", "surface", "1", "Bogus", env=e, check=False)
    assert p.returncode == 1
    p = imops.run("models", "versions", "nope", env=e, check=False)
    assert p.returncode == 1
    imops.run("models", "delete", "surface", "1", env=e)
    vs = json.loads(imops.run("models", "versions", "surface", "--json", env=e).stdout)["model_versions"]
    assert [v["version"] for v in vs] == ["2"]
    imops.run("models", "delete", "surface", env=e)
    assert json.loads(imops.run("models", "list", "--json", env=e).stdout)["registered_models"] == []


def test_runs_errors(imops, tmp_path):
    e = env(tmp_path)
    assert json.loads(imops.run("runs", "list", "--json", env=e).stdout)["runs"] == []
    p = imops.run("runs", "show", "abc", env=e, check=False)
    assert p.returncode == 1 and "not found" in p.stderr
    p = imops.run("runs", "list", "--filter", "metrics.x >>> 1", env=e, check=False)
    assert p.returncode == 1 and "invalid filter" in p.stderr
    p = imops.run("runs", "compare", "a", env=e, check=False)
    assert p.returncode == 2
