"""RidgeCV: exact against scikit-learn, CV scores against brute force, both backends, persistence, errors."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import CheckpointError, ConfigError
from engine.models.ridge import RidgeCV, pearson_per_target, r2_per_target


def _data(rng, n=120, p=20, t=6, offset=3.0):
    X = (rng.standard_normal((n, p)) + offset).astype(np.float32)
    W = rng.standard_normal((p, t)).astype(np.float32)
    Y = (X @ W + 2.0 * rng.standard_normal((n, t)) + 5.0).astype(np.float32)
    return X, Y


@pytest.mark.parametrize("shape", [(120, 20), (30, 80)], ids=["primal", "dual"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_single_alpha_matches_sklearn_ridge(rng, shape, backend):
    from sklearn.linear_model import Ridge

    X, Y = _data(rng, *shape)
    ours = RidgeCV(alphas=[7.0], backend=backend).fit(X, Y)
    ref = Ridge(alpha=7.0).fit(X.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_allclose(ours.coef_, ref.coef_.T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-3, atol=1e-3)
    assert ours.coef_.dtype == np.float32 and ours.alphas_.shape == (Y.shape[1],)


@pytest.mark.parametrize("shape", [(100, 12), (40, 60)], ids=["primal", "dual"])
def test_cv_scores_match_brute_force_refits(rng, shape):
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    X, Y = _data(rng, *shape, t=4)
    alphas = np.logspace(-1, 3, 5)
    ours = RidgeCV(alphas=alphas, cv=4).fit(X, Y)
    brute = np.zeros((len(alphas), Y.shape[1]))
    for tr, va in KFold(4).split(X):
        for i, a in enumerate(alphas):
            pred = Ridge(alpha=a).fit(X[tr], Y[tr]).predict(X[va])
            brute[i] += r2_score(Y[va], pred, multioutput="raw_values") / 4
    np.testing.assert_allclose(ours.cv_scores_, brute, atol=2e-5)
    np.testing.assert_array_equal(ours.alphas_, alphas[brute.argmax(0)].astype(np.float32))


def test_per_target_alpha_follows_noise_level(rng):
    n, p = 200, 10
    X = rng.standard_normal((n, p)).astype(np.float32)
    W = rng.standard_normal((p, 2)).astype(np.float32)
    clean = X @ W[:, 0]
    noisy = 0.05 * (X @ W[:, 1]) + 3.0 * rng.standard_normal(n)
    m = RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(X, np.stack([clean, noisy], 1))
    assert m.alphas_[0] < m.alphas_[1]


def test_chunking_and_backends_agree(rng):
    X, Y = _data(rng, 90, 15, 11)
    a = RidgeCV(alphas=np.logspace(-1, 3, 6)).fit(X, Y)
    b = RidgeCV(alphas=np.logspace(-1, 3, 6), target_chunk=3, backend="torch", device="cpu").fit(X, Y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(a.cv_scores_, b.cv_scores_, atol=1e-4)
    np.testing.assert_array_equal(a.alphas_, b.alphas_)


def test_no_intercept_and_1d_target(rng):
    X, Y = _data(rng, 60, 5, 1, offset=0.0)
    m = RidgeCV(alphas=[1.0], fit_intercept=False).fit(X, Y[:, 0])
    assert m.predict(X).shape == (60,)
    assert np.all(m.intercept_ == 0)


def test_score_is_per_target_r2(rng):
    X, Y = _data(rng)
    m = RidgeCV(alphas=[1.0, 10.0]).fit(X, Y)
    s = m.score(X, Y)
    assert s.shape == (Y.shape[1],)
    np.testing.assert_allclose(s, r2_per_target(Y, m.predict(X)))


def test_save_load_roundtrip(rng, tmp_path):
    X, Y = _data(rng)
    m = RidgeCV(alphas=[0.5, 5.0, 50.0], cv=3).fit(X, Y)
    m.save(tmp_path / "ridge")
    assert sorted(p.name for p in (tmp_path / "ridge").iterdir()) == ["config.json", "model.safetensors"]
    m2 = RidgeCV.load(tmp_path / "ridge")
    np.testing.assert_array_equal(m.predict(X), m2.predict(X))
    np.testing.assert_array_equal(m.alphas_, m2.alphas_)
    assert m2.config == m.config
    m.save(tmp_path / "ridge")  # overwriting an existing model folder is allowed


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="missing config.json"):
        RidgeCV.load(tmp_path)
    (tmp_path / "config.json").write_text('{"class": "Other"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="expected 'RidgeCV'"):
        RidgeCV.load(tmp_path)


def test_bad_arguments(rng):
    X, Y = _data(rng, 20, 3, 2)
    with pytest.raises(ConfigError, match="alphas"):
        RidgeCV(alphas=[-1.0]).fit(X, Y)
    with pytest.raises(ConfigError, match="backend"):
        RidgeCV(backend="jax").fit(X, Y)
    with pytest.raises(ConfigError, match="cv"):
        RidgeCV(cv=50).fit(X, Y)
    with pytest.raises(ValueError, match="same n_samples"):
        RidgeCV().fit(X, Y[:5])
    with pytest.raises(RuntimeError, match="fit"):
        RidgeCV().predict(X)


def test_custom_folds(rng):
    X, Y = _data(rng, 50, 4, 2)
    folds = [(np.arange(25, 50), np.arange(25)), (np.arange(25), np.arange(25, 50))]
    m = RidgeCV(alphas=[1.0, 100.0], cv=folds).fit(X, Y)
    assert m.cv_scores_.shape == (2, 2)


def test_pearson_per_target():
    a = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    b = np.array([[2.0, 1.0], [4.0, 3.0], [6.0, 5.0]])
    np.testing.assert_allclose(pearson_per_target(a, b), [1.0, 0.0])


def test_rescale_outputs_matches_training_spread_and_persists(rng, tmp_path):
    X, Y = _data(rng, n=80, p=40)
    r = RidgeCV(alphas=[300.0]).fit(X, Y)  # a strong penalty shrinks the predictions
    before = r.predict(X)
    assert np.all(before.std(0) < 0.9 * Y.std(0))
    factor = r.rescale_outputs(X, Y)
    after = r.predict(X)
    np.testing.assert_allclose(after.std(0), Y.std(0), rtol=1e-3)
    # The same predictions, stretched about the training mean of each target.
    np.testing.assert_allclose(after, Y.mean(0) + factor * (before - Y.mean(0)), rtol=1e-4, atol=1e-3)
    assert np.all(factor > 1)
    r.save(tmp_path / "r")
    np.testing.assert_array_equal(RidgeCV.load(tmp_path / "r").predict(X), after)
