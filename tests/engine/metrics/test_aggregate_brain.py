import numpy as np
import pytest

from engine.metrics import aggregate, brain


def test_mean_best_of_k_best_set():
    v = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4]])
    s = aggregate.summarise(v)
    assert s["mean"] == pytest.approx(v.mean())
    assert s["best_of_k"] == pytest.approx((0.9 + 0.5 + 0.4) / 3)
    assert s["best_set"] == pytest.approx(max(v[:, 0].mean(), v[:, 1].mean()))
    low = aggregate.summarise(v, higher_is_better=False)
    assert low["best_of_k"] == pytest.approx((0.1 + 0.2 + 0.3) / 3)


def test_roi_correlation_matches_corrcoef(rng):
    pred, meas = rng.standard_normal((5, 20)), rng.standard_normal((5, 20))
    rois = {"V1": np.arange(20) < 8, "empty": np.zeros(20, bool)}
    out = brain.roi_correlation(pred, meas, rois)
    assert set(out) == {"all", "V1"}
    for i in range(5):
        assert out["V1"][i] == pytest.approx(np.corrcoef(pred[i, :8], meas[i, :8])[0, 1], abs=1e-9)
        assert out["all"][i] == pytest.approx(np.corrcoef(pred[i], meas[i])[0, 1], abs=1e-9)


def test_repeat_averaged_voxels_ignores_padding(rng):
    betas = rng.standard_normal((6, 4))
    out = brain.repeat_averaged_voxels(betas, [[0, 2, 4], [5, 1, -1]])
    np.testing.assert_allclose(out[0], betas[[0, 2, 4]].mean(axis=0))
    np.testing.assert_allclose(out[1], betas[[1, 5]].mean(axis=0))
