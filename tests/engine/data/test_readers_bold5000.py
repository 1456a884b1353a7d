"""BOLD5000: ROI files concatenated by hemisphere, presentation-list trials, the 113-image test split, images."""

from __future__ import annotations

import numpy as np

from engine.data import detect_format, open_subject
from engine.data.readers.bold5000 import presentation_list
from tests.engine.data import fixtures as F


def test_opens_with_counts_splits_and_hemispheres(tmp_path):
    info = F.write_bold5000(tmp_path)
    assert detect_format(tmp_path) == "bold5000"
    s = open_subject(tmp_path)
    sm = s.summary()
    assert s.n_trials == info["n_trials"] and s.n_voxels == info["n_voxels"]
    assert sm["splits"] == {"train": info["n_train_trials"], "test": info["n_test_trials"]}
    assert sm["n_test_images"] == info["n_test_images"] and sm["repeats"] == info["repeats"]
    assert sm["n_sessions"] == info["n_sessions"] and s.n_images == info["n_images"]
    assert list(s.rois) == list(F.B5_ROIS)
    assert (s.voxels.hemi[: info["n_voxels"] // 2] == 0).all() and (s.voxels.hemi[info["n_voxels"] // 2 :] == 1).all()
    names, _, _, _ = presentation_list(tmp_path / "BOLD5000_Stimuli/Stimuli_Presentation_Lists/CSI1")
    assert not any(n.startswith("rep_") for n in names)
    assert [s.stimuli.source_ids[i] for i in s.trials.image_index] == names
    bdir = tmp_path / "BOLD5000_GLMsingle_ROI_betas/py"
    first = np.load(bdir / "CSI1_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_LHEarlyVis.npy")
    np.testing.assert_array_equal(s.betas[:, :4], first)


def test_image_files_instead_of_img_dict_give_the_same_subject(tmp_path):
    F.write_bold5000(tmp_path / "a")
    F.write_bold5000(tmp_path / "b", image_dict=False)
    a, b = open_subject(tmp_path / "a"), open_subject(tmp_path / "b")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.trials.image_index, b.trials.image_index)
