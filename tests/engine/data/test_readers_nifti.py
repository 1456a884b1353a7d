"""NIfTI: 4-D or per-trial betas, mask + labels on the same grid, BIDS events, fsaverage5 assignment in MNI space."""

from __future__ import annotations

import numpy as np

from engine.data import detect_format, open_subject
from tests.engine.data import fixtures as F


def test_opens_volume_subject_with_rois_and_surface(tmp_path):
    info = F.write_nifti(tmp_path)
    assert detect_format(tmp_path) == "nifti"
    s = open_subject(tmp_path)
    sm = s.summary()
    assert (s.n_trials, s.n_voxels, s.n_images) == (info["n_trials"], info["n_voxels"], info["n_images"])
    assert sm["splits"]["test"] == info["n_test_trials"] and sm["n_test_images"] == info["n_test_images"]
    assert {k: v for k, v in sm["rois"].items() if k != "brain"} == info["roi_sizes"]
    assert s.volume["space"] == "MNI152" and s.volume["shape"] == list(info["shape"])
    import nibabel as nib

    data = np.asarray(nib.load(str(tmp_path / "betas.nii.gz")).dataobj)
    i, j, k = s.voxels.ijk[5]
    np.testing.assert_allclose(s.betas[:, 5], data[i, j, k, :])
    assigned = s.voxels.vertex >= 0
    assert assigned.any() and s.voxels.has_surface
    x_mm = s.voxels.ijk[:, 0] * 16.0 - 80
    left = assigned & (x_mm < -20)
    assert (s.voxels.hemi[left] == 0).all()


def test_per_trial_files_match_the_4d_file(tmp_path):
    F.write_nifti(tmp_path / "a")
    F.write_nifti(tmp_path / "b", per_trial_files=True)
    a, b = open_subject(tmp_path / "a"), open_subject(tmp_path / "b")
    np.testing.assert_array_equal(a.betas, b.betas)


def test_native_space_has_no_surface(tmp_path):
    F.write_nifti(tmp_path, mni=False)
    s = open_subject(tmp_path)
    assert s.volume["space"] == "native" and not s.voxels.has_surface
