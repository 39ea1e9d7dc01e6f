"""The real Fashion-MNIST (Debian's dataset-fashion-mnist): import, then preprocess."""
from pathlib import Path

import pytest

FM = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FM / "train-images-idx3-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist is not installed (make deps installs it)")
def test_import_and_preprocess_fashion_mnist(imops, tmp_path):
    out = tmp_path / "fmnist"
    p = imops.run("dataset", "import-idx", "--images", FM / "train-images-idx3-ubyte.gz",
                  "--labels", FM / "train-labels-idx1-ubyte.gz", "--out", out)
    assert "imported 60000 images of 28x28 in 10 classes" in p.stdout
    classes = sorted(d.name for d in out.iterdir() if d.is_dir())
    assert classes[0] == "0_T-shirt_top" and classes[9] == "9_Ankle_boot"
    assert len(list((out / "8_Bag").iterdir())) == 6000

    r = imops.json("preprocess", "--data", out, "--img-size", 28)
    assert r["channels"] == 1 and r["total"] == 60000
    for c in classes:
        assert r["counts"]["train"][c] == 4200
        assert r["counts"]["val"][c] == 900
        assert r["counts"]["test"][c] == 900
    # the well-known statistics of the training set (0.2860 / 0.3530 over all 60000)
    assert abs(r["mean"][0] - 0.2860) < 0.002
    assert abs(r["std"][0] - 0.3530) < 0.002
    assert r["bad_files"] == []
