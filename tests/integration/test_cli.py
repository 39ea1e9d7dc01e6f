"""The CLI frame: help, version, exit codes and one-line errors."""
import json

import pytest

COMMANDS = ["datagen", "dataset", "preprocess", "train", "test", "predict", "experiments", "runs", "models", "server", "version"]


def test_top_level_help(imops):
    p = imops.run("--help")
    for c in COMMANDS:
        assert c in p.stdout
    assert "Exit status" in p.stdout


def test_no_arguments_is_a_usage_error(imops):
    p = imops.run(check=False)
    assert p.returncode == 2
    assert "usage" in p.stderr


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_has_help(imops, cmd):
    args = [cmd, "surface", "--help"] if cmd == "datagen" else [cmd, "--help"]
    p = imops.run(*args)
    assert p.stdout.startswith("usage: imops " + cmd)


def test_version(imops):
    assert imops.run("version").stdout.startswith("imops ")
    v = imops.json("version")
    assert v["version"].count(".") == 2


def test_unknown_command_and_options(imops):
    p = imops.run("frobnicate", check=False)
    assert p.returncode == 2
    assert "unknown command 'frobnicate'" in p.stderr
    p = imops.run("preprocess", "--data", "x", "--img-size", "abc", check=False)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1
    assert "--img-size" in p.stderr
    p = imops.run("preprocess", "--bogus", check=False)
    assert p.returncode == 2
    p = imops.run("preprocess", "--img-size", "64", check=False)
    assert p.returncode == 2 and "--data" in p.stderr


def test_job_failure_is_exit_1_with_one_line(imops, tmp_path):
    p = imops.run("preprocess", "--data", tmp_path / "missing", "--img-size", "32", check=False)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a folder" in lines[0]
