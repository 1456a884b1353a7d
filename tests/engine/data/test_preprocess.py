"""Preprocessing: z-score variants against numpy, no test leakage, repeats, ROI selection, noise ceiling, provenance."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cli.main import main
from engine.data.native import write_subject
from engine.data.preprocess import (PreprocessConfig, apply, average_test_repeats, select_rois, threshold_noise_ceiling,
                                    zscore)
from engine.data.readers.kernels import cast_into
from engine.data.subject import Subject
from engine.errors import ConfigError, DataError


def _ref(s: Subject, scope: str, include_test=False):
    X = np.asarray(s.betas, np.float64)
    use = np.ones(len(X), bool) if include_test else np.asarray(s.trials.split) == 0
    if scope == "voxel":
        return (X - X[use].mean(0)) / X[use].std(0)
    if scope == "global":
        return (X - X[use].mean()) / X[use].std()
    out = np.empty_like(X)
    for ses in np.unique(s.trials.session):
        r = np.asarray(s.trials.session) == ses
        out[r] = (X[r] - X[r & use].mean(0)) / X[r & use].std(0)
    return out


@pytest.mark.parametrize("scope", ["voxel", "global", "session"])
def test_zscore_matches_numpy_with_training_statistics(tiny_subject, scope):
    z = zscore(tiny_subject, scope)
    np.testing.assert_allclose(z.betas, _ref(tiny_subject, scope), atol=2e-5)
    step = z.provenance["preprocessing"][-1]
    assert step["step"] == "zscore" and step["scope"] == scope and step["statistics"] == "train"
    assert tiny_subject.provenance.get("preprocessing", []) == []  # the input is untouched


def test_test_trials_never_leak_unless_asked(tiny_subject):
    te = tiny_subject.split_indices("test")
    other = tiny_subject.betas.copy()
    other[te] += 100.0
    s2 = Subject(betas=other, trials=tiny_subject.trials, images=tiny_subject.images, rois=tiny_subject.rois)
    tr = tiny_subject.split_indices("train")
    np.testing.assert_allclose(zscore(s2).betas[tr], zscore(tiny_subject).betas[tr], atol=1e-6)
    z_all = zscore(tiny_subject, include_test=True)
    np.testing.assert_allclose(z_all.betas, _ref(tiny_subject, "voxel", include_test=True), atol=2e-5)
    assert z_all.provenance["preprocessing"][-1]["statistics"].startswith("all trials")


def test_float16_stays_float16_and_session_without_training_trials(tiny_subject):
    s16 = Subject(betas=tiny_subject.betas.astype(np.float16), trials=tiny_subject.trials, images=tiny_subject.images)
    z = zscore(s16, "voxel")
    assert z.betas.dtype == np.float16
    np.testing.assert_allclose(z.betas.astype(np.float64), _ref(s16, "voxel"), atol=5e-3)
    t = tiny_subject.trials
    sess = np.where(np.asarray(t.split) == 1, 9, np.asarray(t.session))  # test trials alone in session 9
    from engine.data.subject import TrialTable

    s9 = Subject(betas=tiny_subject.betas, images=tiny_subject.images,
                 trials=TrialTable(image_index=t.image_index, session=sess, run=t.run, repeat=t.repeat, split=t.split))
    z9 = zscore(s9, "session")
    assert z9.provenance["preprocessing"][-1]["sessions_without_train"] == [9]
    assert np.isfinite(z9.betas).all()


def test_fast_cast_matches_numpy():
    a = np.random.default_rng(0).standard_normal((1100, 1000)).astype(np.float32) * 300
    o1, o2 = np.empty(a.shape, np.float16), np.empty(a.shape, np.float16)
    cast_into(o1, a)
    o2[...] = a
    assert np.array_equal(o1, o2)
    back = np.empty(a.shape, np.float32)
    cast_into(back, o1)
    assert np.array_equal(back, o1.astype(np.float32))


def test_average_test_repeats(tiny_subject):
    avg = average_test_repeats(tiny_subject)
    imgs, groups = tiny_subject.repeat_groups("test")
    te = avg.split_indices("test")
    assert len(te) == len(imgs) and avg.summary()["repeats"] == 1
    np.testing.assert_allclose(avg.betas[te], tiny_subject.betas[groups].mean(axis=1), atol=1e-6)
    assert np.array_equal(avg.trials.image_index[te], imgs)
    tr = tiny_subject.split_indices("train")
    np.testing.assert_array_equal(avg.betas[avg.split_indices("train")], tiny_subject.betas[tr])
    step = avg.provenance["preprocessing"][-1]
    assert step == {"step": "average_test_repeats", "n_images": 10, "min_repeats": 3, "max_repeats": 3,
                    "average_of": "voxels"}


def test_roi_selection_and_noise_ceiling(tiny_subject):
    v1 = select_rois(tiny_subject, ["V1"])
    assert v1.n_voxels == 32 and list(v1.rois) == ["V1"]
    assert v1.provenance["preprocessing"][-1]["rois_dropped"] == ["LO"]
    np.testing.assert_array_equal(v1.betas, tiny_subject.betas[:, :32])
    with pytest.raises(ConfigError, match="'XX'"):
        select_rois(tiny_subject, "XX")
    nc = tiny_subject.voxels.noise_ceiling.copy()
    nc[:10] = 0.1
    from engine.data.subject import VoxelTable

    vt = VoxelTable(hemi=tiny_subject.voxels.hemi, vertex=tiny_subject.voxels.vertex, ijk=tiny_subject.voxels.ijk,
                    noise_ceiling=nc)
    s = Subject(betas=tiny_subject.betas, trials=tiny_subject.trials, images=tiny_subject.images, voxels=vt,
                rois=tiny_subject.rois)
    t = threshold_noise_ceiling(s, 0.3)
    assert t.n_voxels == 54
    no_nc = Subject(betas=tiny_subject.betas, trials=tiny_subject.trials, images=tiny_subject.images)
    with pytest.raises(DataError, match="no noise ceiling"):
        threshold_noise_ceiling(no_nc, 0.3)


def test_apply_order_is_recorded_and_inspect_shows_it(tiny_subject, tmp_path, capsys):
    cfg = PreprocessConfig(zscore="global", rois=["LO"], average_test_repeats=True)
    s = apply(tiny_subject, cfg)
    assert [p["step"] for p in s.provenance["preprocessing"]] == ["select_rois", "zscore", "average_test_repeats"]
    p = write_subject(s, tmp_path / "s.nlsubj")
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "select_rois(rois=['LO']" in out and "zscore(scope=global" in out and "average_test_repeats(" in out
    with pytest.raises(ConfigError):
        PreprocessConfig(zscore="robust")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_large_blocks_take_the_vectorised_path_with_the_same_result(dtype):
    rng = np.random.default_rng(3)
    n, v = 1200, 1000  # > 2**20 values: cast/affine helpers switch to torch kernels
    from engine.data.subject import TrialTable

    split = (np.arange(n) % 10 == 0).astype(np.int8)
    trials = TrialTable(image_index=np.arange(n), session=1 + np.arange(n) // 600, run=np.ones(n, np.int64),
                        repeat=np.zeros(n, np.int64), split=split)
    s = Subject(betas=(rng.standard_normal((n, v)) * 3 + 5).astype(dtype), trials=trials,
                images=np.zeros((n, 2, 2, 3), np.uint8))
    for scope in ("voxel", "session"):
        z = zscore(s, scope)
        assert z.betas.dtype == dtype
        if dtype == np.float16:  # within about one float16 step of the exact result
            np.testing.assert_allclose(z.betas.astype(np.float64), _ref(s, scope), atol=3e-3, rtol=2e-3)
        else:
            np.testing.assert_allclose(z.betas, _ref(s, scope), atol=2e-5)


def test_voxel_selection_keeps_ground_truth_aligned(tiny_subject):
    """Simulation ground truth is per voxel: selecting voxels must subset it the same way."""
    from engine.data.subject import Subject

    n = tiny_subject.n_voxels
    gt = {"prf_x": np.arange(n, dtype=np.float32), "roi_id": np.r_[np.zeros(32), np.ones(n - 32)].astype(np.int16)}
    s = Subject(betas=tiny_subject.betas, trials=tiny_subject.trials, images=tiny_subject.images,
                voxels=tiny_subject.voxels, rois=tiny_subject.rois, stimuli=tiny_subject.stimuli,
                name="gt", provenance={}, ground_truth=gt)
    lo = select_rois(s, ["LO"])
    np.testing.assert_array_equal(lo.ground_truth["prf_x"], np.arange(32, n, dtype=np.float32))
    assert set(lo.ground_truth["roi_id"].tolist()) == {1}
