"""``pixel-ridge`` through an image basis: principal components (``data.pixel_basis: pca``) and Miyawaki et al.
2008's multi-scale local decoders (``data.pixel_basis: multiscale``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.data.subject import Stimuli, Subject, TrialTable
from engine.errors import ConfigError
from engine.events import drive


def make_subject(grey: np.ndarray, n_train: int, encode, n_voxels: int, *, noise=0.3, repeats=2, prior=None,
                 seed=0) -> Subject:
    """A grey subject: images ``grey`` (n, H, W) uint8, the first ``n_train`` for training (one trial each), the rest
    shown ``repeats`` times in the test split; voxels = ``encode(pixels in [0, 1]) + noise``."""
    rng = np.random.default_rng(seed)
    n = len(grey)
    idx = np.concatenate([np.arange(n_train), np.repeat(np.arange(n_train, n), repeats)])
    betas = encode(grey.reshape(n, -1)[idx] / 255.0) + noise * rng.standard_normal((len(idx), n_voxels))
    rep = np.concatenate([np.zeros(n_train, np.int64), np.tile(np.arange(repeats), n - n_train)])
    trials = TrialTable(image_index=idx, session=np.ones(len(idx), np.int64), run=np.ones(len(idx), np.int64),
                        repeat=rep, split=(idx >= n_train).astype(np.int8))
    rgb = lambda g: np.repeat(g[..., None], 3, axis=-1)  # noqa: E731
    return Subject(betas=betas.astype(np.float32), trials=trials, images=rgb(grey),
                   rois={"all": np.ones(n_voxels, bool)}, stimuli=Stimuli(categories=["a"], labels=np.zeros(n, int)),
                   name="basis", prior_images=None if prior is None else rgb(prior))


def linear_subject(grey, n_train, n_voxels=150, seed=0, **kw) -> Subject:
    w = np.random.default_rng(seed + 1).standard_normal((grey[0].size, n_voxels)) / grey.shape[1]
    return make_subject(grey, n_train, lambda x: x @ w, n_voxels, seed=seed, **kw)


def train(subject, root, name, **overrides):
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    cfg = get_preset("pixel-ridge", subject).with_overrides(overrides)
    drive(train_job(cfg, subject, root / name))
    return root / name


def test_pca_with_full_rank_equals_plain_pixel_ridge(tmp_path):
    """With one alpha (ridge is then equivariant to rotations of its targets) and K = the rank of the basis images,
    decoding through the components is the pixel ridge exactly: the training images lie in the basis's span."""
    from tests.engine.data.own_fixtures import grey_images

    from engine.train.predict import load_encoder, model_info, predict_embeddings

    imgs = grey_images(110, 10, seed=3)
    s = linear_subject(imgs[:90], 80, prior=imgs[90:])
    one_alpha = {"model.params.alphas": [30.0]}
    plain = train(s, tmp_path, "plain", **one_alpha)
    pca = train(s, tmp_path, "pca", **one_alpha, **{"data.pixel_basis": "pca", "data.pca_components": 1000})
    info = model_info(pca)["pixel_basis"]
    assert info["kind"] == "pca" and info["n_basis_images"] == 80 + 20
    assert info["n_components"] == info["rank"] < 1000 and info["requested_components"] == 1000
    log = (pca / "events.jsonl").read_text()
    assert "principal components of 80 training stimuli + 20 prior images (asked for 1000" in log
    a = predict_embeddings(plain, s, "test").embeddings
    b = predict_embeddings(pca, s, "test").embeddings
    assert np.abs(a - b).max() < 2e-3 and np.abs(a).max() > 0.1
    # the stored decoder predicts pixels, not component scores
    assert load_encoder(pca).predict(np.zeros((1, s.n_voxels), np.float32)).shape == (1, 100)


def test_k_components_decode_within_their_span(tmp_path):
    from tests.engine.data.own_fixtures import grey_images

    from engine.models.pixel_basis import PixelBasisDecoder
    from engine.train.predict import model_info, predict_embeddings

    s = linear_subject(grey_images(100, 10, seed=4), 80)
    run = train(s, tmp_path, "k5", **{"data.pixel_basis": "pca", "data.pca_components": 5})
    assert model_info(run)["pixel_basis"]["n_components"] == 5
    dec = PixelBasisDecoder.load_from(run / "model")
    assert dec.decode.shape == (5, 100) and np.allclose(dec.decode @ dec.decode.T, np.eye(5), atol=1e-4)
    pred = predict_embeddings(run, s, "test")
    assert np.linalg.matrix_rank(pred.embeddings - dec.offset, tol=1e-3) == 5
    r = np.corrcoef(pred.embeddings, pred.targets)[:20, 20:]
    assert (np.argmax(r, axis=1) == np.arange(20)).mean() >= 0.3  # chance: 1/20


def test_the_pca_basis_never_sees_a_test_stimulus(tmp_path):
    """Training and prior images are dark in the right three columns; test images are bright there. Components fitted
    with a test image would load on those pixels (and the decoder could paint them): they must not."""
    from tests.engine.data.own_fixtures import grey_images

    from engine.models.pixel_basis import PixelBasisDecoder
    from engine.train.predict import predict_embeddings

    imgs = grey_images(130, 10, seed=5)
    imgs[:, :, 7:] = 0
    imgs[100:120, :, 7:] = 200  # the test images (100..119) only
    s = linear_subject(imgs[:120], 100, prior=imgs[120:])
    run = train(s, tmp_path, "pca", **{"data.pixel_basis": "pca", "data.pca_components": 1000})
    dec = PixelBasisDecoder.load_from(run / "model")
    right = np.zeros((10, 10), bool)
    right[:, 7:] = True
    assert np.abs(dec.decode[:, right.ravel()]).max() < 1e-5 and np.abs(dec.offset[right.ravel()]).max() < 1e-6
    pred = predict_embeddings(run, s, "test").embeddings.reshape(-1, 10, 10)
    assert np.abs(pred[:, right]).max() < 1e-4
    # the plain pixel ridge can (its targets there are 0 on every training trial too): both agree on 0
    assert predict_embeddings(run, s, "test").targets.reshape(-1, 10, 10)[:, right].min() > 0.7


# ----------------------------------------------------------------------------------------------------------------------
# Multi-scale local decoders (Miyawaki et al. 2008)


def patch_contrasts_numpy(images: np.ndarray) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """Hand-written: the mean of every 1×1, 1×2, 2×1, 2×2 patch of (n, H, W) images, and each patch's pixels."""
    n, h, w = images.shape
    cols, pixels = [], []
    for ph, pw in ((1, 1), (1, 2), (2, 1), (2, 2)):
        for i in range(h - ph + 1):
            for j in range(w - pw + 1):
                cols.append(images[:, i:i + ph, j:j + pw].mean(axis=(1, 2)))
                pixels.append([(a, b) for a in range(i, i + ph) for b in range(j, j + pw)])
    return np.stack(cols, 1), pixels


def ridge_numpy(x, y, alpha, x_new):
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return (x_new - mx) @ w + my


def test_multiscale_equals_a_hand_written_numpy_reference():
    from engine.models.pixel_basis import fit_pixel_decoder
    from engine.models.ridge import RidgeCV

    rng = np.random.default_rng(0)
    h, w, n, n_vox, alpha, k = 4, 5, 36, 25, 3.0, 3
    images = (rng.random((n + 6, h, w)) > 0.5).astype(np.float64)
    contrasts, pixels = patch_contrasts_numpy(images)
    x = contrasts @ rng.standard_normal((contrasts.shape[1], n_vox)) + 0.5 * rng.standard_normal((n + 6, n_vox))
    xtr, xte, ytr = x[:n], x[n:], images[:n].reshape(n, -1)
    # reference: one ridge per patch; out-of-fold predictions on the training set (contiguous folds);
    # per pixel, least squares of the covering patches' predictions (and an intercept)
    oof = np.zeros((n, contrasts.shape[1]))
    for val in np.array_split(np.arange(n), k):
        tr = np.setdiff1d(np.arange(n), val)
        oof[val] = ridge_numpy(xtr[tr], contrasts[tr], alpha, xtr[val])
    test_contrasts = ridge_numpy(xtr, contrasts[:n], alpha, xte)
    want = np.zeros((len(xte), h * w))
    for p in range(h * w):
        cover = [e for e, px in enumerate(pixels) if (p // w, p % w) in px]
        a = np.hstack([oof[:, cover], np.ones((n, 1))])
        coef, *_ = np.linalg.lstsq(a, ytr[:, p], rcond=None)
        want[:, p] = test_contrasts[:, cover] @ coef[:-1] + coef[-1]

    dec = fit_pixel_decoder("multiscale", lambda: RidgeCV(alphas=[alpha], cv=k), xtr, ytr, image_shape=(h, w, 1), cv=k)
    assert dec.info["n_elements"] == 20 + 15 + 16 + 12 == len(pixels)
    got = dec.predict(xte)
    assert np.abs(got - want).max() < 1e-3
    assert np.allclose(xte @ dec.coef_ + dec.intercept_, got, atol=1e-4)  # the folded linear map


def test_multiscale_recovers_patterns_from_voxels_that_encode_local_contrasts(tmp_path):
    """Random 8×8 binary patterns (Miyawaki's 10×10 design, smaller); each voxel sees the contrast of a few local
    patches of various sizes. The multi-scale decoder identifies the test patterns far above chance and
    ``reconstruct`` writes its predictions as the images."""
    from engine.models.pixel_basis import multiscale_elements
    from engine.recon.reconstruct import reconstruct_job
    from engine.train.predict import model_info, predict_embeddings

    rng = np.random.default_rng(7)
    size, n_train, n_test, n_vox = 8, 240, 20, 300
    grey = ((rng.random((n_train + n_test, size, size)) > 0.5) * 255).astype(np.uint8)
    elements = multiscale_elements(size, size)
    weights = np.zeros((len(elements), n_vox))
    for v in range(n_vox):  # each voxel: a receptive field of 3 random patches
        weights[rng.choice(len(elements), 3, replace=False), v] = rng.random(3) + 0.5
    s = make_subject(grey, n_train, lambda x: (x @ elements.T) @ weights, n_vox, noise=0.5, seed=7)
    run = train(s, tmp_path, "ms", **{"data.pixel_basis": "multiscale"})
    info = model_info(run)["pixel_basis"]
    assert info["kind"] == "multiscale" and info["elements"] == {"1x1": 64, "1x2": 56, "2x1": 56, "2x2": 49}
    pred = predict_embeddings(run, s, "test")
    r = np.corrcoef(pred.embeddings, pred.targets)[:n_test, n_test:]
    assert (np.argmax(r, axis=1) == np.arange(n_test)).mean() >= 0.8  # chance: 1/20
    assert np.mean(np.diag(r)) > 0.5
    out = tmp_path / "rec"
    drive(reconstruct_job(run, subject=s, out_dir=out))
    index = json.loads((out / "index.json").read_text())
    assert index["settings"]["decoder"] == "pixels" and len(index["items"]) == n_test
    assert index["settings"]["pixel_basis"] == "multiscale" and "multi-scale" in index["method"]


def test_multiscale_refuses_images_too_large_for_its_dense_decoder():
    from engine.models.pixel_basis import fit_pixel_decoder

    with pytest.raises(ConfigError, match=r"multiscale.*64×64×3.*pca"):
        fit_pixel_decoder("multiscale", None, np.zeros((4, 3)), np.zeros((4, 64 * 64 * 3)), image_shape=(64, 64, 3))


def test_cross_validated_predictions_are_out_of_fold_ridge_fits():
    from engine.models.ridge import cross_validated_predictions

    rng = np.random.default_rng(1)
    for n_features in (12, 60):  # primal and dual folds
        x, y = rng.standard_normal((30, n_features)), rng.standard_normal((30, 2)) + 3
        got = cross_validated_predictions(x, y, [1.0, 50.0], cv=3)
        for val in np.array_split(np.arange(30), 3):
            tr = np.setdiff1d(np.arange(30), val)
            for t, alpha in enumerate((1.0, 50.0)):
                assert np.allclose(got[val, t], ridge_numpy(x[tr], y[tr, t], alpha, x[val]), atol=1e-4)


def test_bad_pixel_basis_settings_get_one_clear_line():
    from engine.train.config import TrainConfig
    from engine.train.presets import get_preset

    cfg = get_preset("pixel-ridge", None)
    with pytest.raises(ConfigError, match="data.pixel_basis"):
        cfg.with_overrides({"data.pixel_basis": "wavelets"})
    with pytest.raises(ConfigError, match="data.pixel_basis.*stimulus-pixels"):
        cfg.with_overrides({"data.pixel_basis": "pca", "data.embedder": "demo"})
    with pytest.raises(ConfigError, match="data.pca_components"):
        cfg.with_overrides({"data.pixel_basis": "pca", "data.pca_components": 0})
    with pytest.raises(ConfigError, match="rescale"):
        cfg.with_overrides({"data.pixel_basis": "multiscale", "model.params.rescale": True})
    ok = cfg.with_overrides({"data.pixel_basis": "pca", "data.pca_components": 30})
    assert TrainConfig.from_yaml_text(ok.to_yaml()) == ok


def test_multiscale_generalises_from_random_patterns_to_shapes_better_than_a_pixel_ridge():
    """Miyawaki et al. 2008's design (benchmarks/bench_pixel_bases.py): trained on random 10×10 patterns, tested on
    shapes, with V1-like voxels; the local multi-scale decoders beat one ridge per pixel."""
    from benchmarks.bench_pixel_bases import ALPHAS, simulate

    from engine.models.pixel_basis import fit_pixel_decoder
    from engine.models.ridge import RidgeCV

    xtr, ytr, xte, yte = simulate(seed=0, n_voxels=400, noise=0.5)

    def ridge():
        return RidgeCV(alphas=ALPHAS, cv=5)

    def pixcorr(pred):
        return np.mean([np.corrcoef(pred[i], yte[i])[0, 1] for i in range(len(yte))])

    plain = pixcorr(ridge().fit(xtr, ytr).predict(xte))
    multi = pixcorr(fit_pixel_decoder("multiscale", ridge, xtr, ytr, image_shape=(10, 10, 1)).predict(xte))
    assert multi > plain + 0.03 and plain > 0.3


def test_a_saved_basis_round_trips_and_a_damaged_one_is_named(tmp_path):
    from engine.errors import CheckpointError
    from engine.models.pixel_basis import PixelBasisDecoder, fit_pixel_decoder
    from engine.models.ridge import RidgeCV

    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((30, 8)), rng.random((30, 36))
    dec = fit_pixel_decoder("pca", lambda: RidgeCV(alphas=[1.0, 10.0], cv=3), x, y, basis_images=y, n_components=6)
    dec.save_into(tmp_path)
    back = PixelBasisDecoder.load_from(tmp_path)
    assert back.info == dec.info and np.array_equal(back.predict(x), dec.predict(x))
    (tmp_path / "pixel_basis" / "basis.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"pixel_basis.*missing basis.safetensors"):
        PixelBasisDecoder.load_from(tmp_path)


def test_the_cli_trains_and_reconstructs_through_a_basis(tmp_path, capsys):
    from tests.engine.data.own_fixtures import grey_images

    from engine.cli.main import main
    from engine.data.native import write_subject

    subj = write_subject(linear_subject(grey_images(60, 8, seed=6), 50), tmp_path / "s.nlsubj")
    run = tmp_path / "run"
    assert main(["train", "--data", str(subj), "--preset", "pixel-ridge", "--out", str(run), "--set",
                 "data.pixel_basis=pca", "--set", "data.pca_components=12"]) == 0
    assert "12 principal components of 50 training stimuli" in capsys.readouterr().err  # the log line
    assert main(["reconstruct", str(run), "--out", str(tmp_path / "rec")]) == 0
    index = json.loads((tmp_path / "rec" / "index.json").read_text())
    assert "PCA K=12" in index["method"] and len(index["items"]) == 10
    assert main(["train", "--data", str(subj), "--preset", "demo-ridge", "--out", str(tmp_path / "bad"), "--set",
                 "data.pixel_basis=multiscale"]) == 2  # a basis needs the stimulus-pixels target
