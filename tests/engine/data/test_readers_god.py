"""GOD (Kamitani) npz as MinD-Vis uses it: splits, repeats, labels, ROIs, noise ceiling, averaged test option."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import detect_format, open_subject
from tests.engine.data import fixtures as F


@pytest.fixture(scope="module")
def god(tmp_path_factory):
    return F.write_god(tmp_path_factory.mktemp("god"))


def test_opens_with_counts_rois_and_labels(god):
    assert detect_format(god["path"]) == "god" and detect_format(god["folder"]) == "god"
    s = open_subject(god["path"])
    sm = s.summary()
    assert sm["splits"] == {"train": god["n_train"], "test": god["n_test_trials"]}
    assert sm["n_test_images"] == god["n_test_images"] and sm["repeats"] == god["repeats"]
    assert s.n_images == god["n_images"] and s.n_voxels == god["n_voxels"]
    assert list(s.rois)[:3] == ["VC", "LVC", "HVC"] and s.rois["VC"].all()
    z = np.load(god["path"])
    tr = s.split_indices("train")
    np.testing.assert_allclose(s.betas[tr], z["arr_0"].astype(np.float32))
    assert np.array_equal(s.trials.image_index[tr], z["arr_3"])
    te = s.split_indices("test")
    assert np.array_equal(s.trials.image_index[te], z["arr_4"] + god["n_train"])
    imgs = np.load(god["folder"] / "images_256.npz")
    assert np.array_equal(s.images[god["n_train"]], imgs["test_images"][0])
    np.testing.assert_allclose(s.voxels.noise_ceiling, z["arr_5"].astype(np.float32))
    assert s.betas.dtype == np.float32


def test_averaged_test_rows(god):
    s = open_subject(god["path"], test="averaged")
    sm = s.summary()
    assert sm["splits"]["test"] == god["n_test_images"] and sm["repeats"] == 1
    z = np.load(god["path"])
    np.testing.assert_allclose(s.betas[s.split_indices("test")], z["arr_2"].astype(np.float32))
    assert s.summary()["preprocessing"][0]["step"] == "average_test_repeats"


def test_percent_noise_ceiling_is_converted(tmp_path):
    info = F.write_god(tmp_path, extra={"arr_5": np.linspace(0, 80, 30)})
    s = open_subject(info["path"])
    assert s.voxels.noise_ceiling.max() == pytest.approx(0.8)
    assert s.provenance["preprocessing"][0]["step"] == "noise_ceiling_units"
