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


# --- primal vs dual (kernel) solvers --------------------------------------------------------------------------------


def _closed_form_cv(X, Y, folds, alphas, fit_intercept):
    """Fold-averaged validation R² (n_alphas, t) and the per-target-alpha refit, all in float64 numpy."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)

    def solve(x, y, alpha):
        mx, my = (x.mean(0), y.mean(0)) if fit_intercept else (np.zeros(x.shape[1]), np.zeros(y.shape[1]))
        w = np.linalg.solve((x - mx).T @ (x - mx) + alpha * np.eye(x.shape[1]), (x - mx).T @ (y - my))
        return w, my - mx @ w

    scores = np.zeros((len(alphas), Y.shape[1]))
    for tr, va in folds:
        for i, a in enumerate(alphas):
            w, b = solve(X[tr], Y[tr], a)
            sse = ((Y[va] - X[va] @ w - b) ** 2).sum(0)
            scores[i] += 1 - sse / ((Y[va] - Y[va].mean(0)) ** 2).sum(0)
    scores /= len(folds)
    best = np.asarray(alphas)[scores.argmax(0)]
    coef = np.zeros((X.shape[1], Y.shape[1]))
    intercept = np.zeros(Y.shape[1])
    for j, a in enumerate(best):
        w, b = solve(X, Y[:, j:j + 1], a)
        coef[:, j], intercept[j] = w[:, 0], np.ravel(b)[0]
    return scores, coef, intercept


def _kfold(n, k, shuffle=False):
    from sklearn.model_selection import KFold

    return list(KFold(k, shuffle=shuffle, random_state=0 if shuffle else None).split(np.zeros((n, 1))))


@pytest.mark.parametrize("shape", [(40, 90), (150, 25)], ids=["n<p", "n>p"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_primal_and_dual_equal_closed_form(rng, shape, fit_intercept, backend):
    X, Y = _data(rng, *shape, t=7)
    Y[:, 0] = X[:, 0] + 0.01 * Y[:, 0]  # an almost noiseless target next to noisy ones: different alphas per target
    alphas = np.logspace(-2, 4, 7)
    folds = _kfold(len(X), 4)
    scores, coef, intercept = _closed_form_cv(X, Y, folds, alphas, fit_intercept)
    fits = {s: RidgeCV(alphas=alphas, cv=4, solver=s, fit_intercept=fit_intercept, backend=backend).fit(X, Y)
            for s in ("primal", "dual", "auto")}
    assert len(set(scores.argmax(0))) > 1  # the case really has per-target alphas
    for name, m in fits.items():
        np.testing.assert_allclose(m.cv_scores_, scores, atol=5e-5, err_msg=name)
        np.testing.assert_array_equal(m.alphas_, alphas[scores.argmax(0)].astype(np.float32), err_msg=name)
        np.testing.assert_allclose(m.coef_, coef, rtol=2e-3, atol=2e-4, err_msg=name)
        np.testing.assert_allclose(m.intercept_, intercept, rtol=1e-3, atol=2e-3, err_msg=name)


@pytest.mark.parametrize("cv", ["shuffled", "uneven"])
def test_shared_dual_decomposition_handles_any_partition(rng, cv):
    from engine.models.ridge_kernel import partitions

    X, Y = _data(rng, 53, 80, t=5)
    folds = _kfold(53, 5, shuffle=True) if cv == "shuffled" else _kfold(53, 3)  # 18/18/17 samples
    assert partitions(folds, 53)
    alphas = np.logspace(-1, 3, 5)
    scores, coef, _ = _closed_form_cv(X, Y, folds, alphas, True)
    m = RidgeCV(alphas=alphas, cv=folds).fit(X, Y)
    np.testing.assert_allclose(m.cv_scores_, scores, atol=5e-5)
    np.testing.assert_allclose(m.coef_, coef, rtol=2e-3, atol=2e-4)


def test_folds_that_do_not_partition_use_per_fold_dual(rng):
    from engine.models.ridge_kernel import partitions

    X, Y = _data(rng, 60, 100, t=3)
    folds = [(np.arange(0, 40), np.arange(40, 60)), (np.arange(20, 60), np.arange(0, 10))]  # gaps and overlap
    assert not partitions(folds, 60)
    alphas = np.logspace(-1, 3, 5)
    scores, _, _ = _closed_form_cv(X, Y, folds, alphas, True)
    np.testing.assert_allclose(RidgeCV(alphas=alphas, cv=folds).fit(X, Y).cv_scores_, scores, atol=5e-5)


def test_partitions_and_solver_choice():
    from engine.models.ridge_kernel import partitions, prefer_shared

    n = 20
    assert partitions(_kfold(n, 4), n) and partitions(_kfold(n, 4, shuffle=True), n)
    assert not partitions([(np.arange(10, 20), np.arange(10))], n)  # half the samples never validated
    assert not partitions([(np.arange(5, 20), np.arange(10)), (np.arange(10), np.arange(10, 20))], n)
    # NSD shape, 5 folds: one shared decomposition beats five; 2 folds of 2,000 do not.
    assert prefer_shared(_kfold(4000, 5), 4000, 768, 20)
    assert not prefer_shared(_kfold(4000, 2), 4000, 768, 20)


def test_rank_deficient_dual_stays_accurate(rng):
    """Float32 eigenvalues below the rank tolerance are noise; dividing small alphas by them broke the CV scores."""
    n, p = 120, 300
    latent = rng.standard_normal((n, 15)).astype(np.float32)
    X = 10 * latent @ rng.standard_normal((15, p)).astype(np.float32)
    X[:, :5] += 1000.0  # a large offset the centring removes
    Y = (latent[:, :4] @ rng.standard_normal((4, 3)) + rng.standard_normal((n, 3))).astype(np.float32)
    alphas = np.logspace(-2, 4, 7)
    scores, coef, intercept = _closed_form_cv(X, Y, _kfold(n, 5), alphas, True)
    for solver in ("dual", "primal"):
        m = RidgeCV(alphas=alphas, cv=5, solver=solver).fit(X, Y)
        np.testing.assert_allclose(m.cv_scores_, scores, atol=1e-4, err_msg=solver)
        np.testing.assert_allclose(m.predict(X), X.astype(np.float64) @ coef + intercept, rtol=1e-3, atol=1e-2,
                                   err_msg=solver)


def test_solver_is_saved_and_checked(rng, tmp_path):
    X, Y = _data(rng, 30, 50, t=2)
    RidgeCV(alphas=[1.0, 10.0], cv=3, solver="primal").fit(X, Y).save(tmp_path / "r")
    assert RidgeCV.load(tmp_path / "r").solver == "primal"
    with pytest.raises(ConfigError, match="solver"):
        RidgeCV(solver="svd").fit(X, Y)


def test_large_gram_matrices_use_the_threaded_eigh_and_agree_with_numpys(rng, monkeypatch):
    """From THREADED_EIGH_SIZE up the dual CV decomposes through scipy's threaded LAPACK (2x faster on 2 cores);
    its CV scores, alphas and weights are those of numpy's eigh on the same data."""
    import scipy.linalg

    import engine.models.ridge_backends as ridge_backends

    X, Y = _data(rng, 1100, 1400, t=8)
    calls = []
    real = scipy.linalg.eigh
    monkeypatch.setattr(scipy.linalg, "eigh", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    threaded = RidgeCV(alphas=np.logspace(-1, 4, 6), cv=5, solver="dual").fit(X, Y)
    assert calls and calls[0][0] >= ridge_backends.THREADED_EIGH_SIZE
    monkeypatch.setattr(ridge_backends, "THREADED_EIGH_SIZE", 10**9)
    plain = RidgeCV(alphas=np.logspace(-1, 4, 6), cv=5, solver="dual").fit(X, Y)
    assert len(calls) == 1
    np.testing.assert_allclose(threaded.cv_scores_, plain.cv_scores_, atol=1e-5)
    np.testing.assert_array_equal(threaded.alphas_, plain.alphas_)
    # float32 decompositions: agreement to 1e-4 of the weights' scale (one LAPACK thread or several round differently)
    np.testing.assert_allclose(threaded.coef_, plain.coef_, rtol=1e-3, atol=1e-4 * np.abs(plain.coef_).max())
