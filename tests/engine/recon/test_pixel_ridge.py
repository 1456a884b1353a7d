"""The pixel decoder: ``pixel-ridge`` predicts the stimulus pixels; ``reconstruct`` writes them as the images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.data.subject import Stimuli, Subject, TrialTable
from engine.events import drive


def grey_subject(n_train=120, n_test=10, size=12, n_voxels=200, repeats=2, seed=0) -> Subject:
    """Grey images; voxels respond linearly to the pixels (so a pixel ridge can recover them)."""
    from tests.engine.data.own_fixtures import grey_images

    rng = np.random.default_rng(seed)
    grey = grey_images(n_train + n_test, size, seed)
    images = np.repeat(grey[..., None], 3, axis=-1)
    w = rng.standard_normal((size * size, n_voxels)) / size
    idx = np.concatenate([np.arange(n_train), np.repeat(np.arange(n_train, n_train + n_test), repeats)])
    betas = (grey.reshape(len(grey), -1)[idx] / 255.0) @ w + 0.3 * rng.standard_normal((len(idx), n_voxels))
    split = (idx >= n_train).astype(np.int8)
    rep = np.concatenate([np.zeros(n_train, np.int64), np.tile(np.arange(repeats), n_test)])
    trials = TrialTable(image_index=idx, session=np.ones(len(idx), np.int64), run=np.ones(len(idx), np.int64),
                        repeat=rep, split=split)
    return Subject(betas=betas.astype(np.float32), trials=trials, images=images, rois={"all": np.ones(n_voxels, bool)},
                   stimuli=Stimuli(categories=["a", "b"], labels=np.arange(len(grey)) % 2), name="grey")


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    from engine.data.native import write_subject
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    root = tmp_path_factory.mktemp("pixridge")
    subj = write_subject(grey_subject(), root / "grey.nlsubj")
    from engine.data.native import read_native

    s = read_native(subj)
    drive(train_job(get_preset("pixel-ridge", s), s, root / "run"))
    return root / "run", s


def test_pixel_ridge_targets_are_the_grey_pixels_at_full_size(pixel_run):
    from engine.train.predict import model_info

    info = model_info(pixel_run[0])
    assert info["embedder"] == "stimulus-pixels" and tuple(info["target_shape"]) == (144,)


def test_reconstruct_writes_the_predicted_images_as_grey_low_level_images(pixel_run, tmp_path):
    from PIL import Image

    from engine.recon.reconstruct import reconstruct_job
    from engine.train.predict import predict_embeddings

    run, s = pixel_run
    res = drive(reconstruct_job(run, subject=s, out_dir=tmp_path / "rec"))
    index = json.loads((tmp_path / "rec" / "index.json").read_text())
    assert res.n_images == 10 and index["settings"]["generator"] is None
    item = index["items"][0]
    with Image.open(tmp_path / "rec" / item["blurry"]) as im:
        assert im.mode == "L" and im.size == (12, 12)
        blurry = np.asarray(im)
    with Image.open(tmp_path / "rec" / item["samples"][0]) as im:
        assert np.array_equal(np.asarray(im), blurry)
    pred = predict_embeddings(run, s, "test", "average_outputs")
    want = np.clip(pred.embeddings[0].reshape(12, 12), 0, 1) * 255
    assert np.abs(blurry.astype(float) - want).max() <= 0.51
    # and it decodes the images: the prediction correlates with its own image better than with the others
    gt = np.asarray(s.images)[pred.image_index][..., 0].reshape(len(pred.image_index), -1)
    r = np.corrcoef(pred.embeddings, gt)[:10, 10:]
    assert (np.argmax(r, axis=1) == np.arange(10)).mean() >= 0.8


def test_pixel_ridge_matches_a_plain_numpy_ridge(pixel_run):
    """Same split, same per-pixel CV over the same alphas: a few lines of numpy give the same images."""
    from engine.train.predict import predict_embeddings

    run, s = pixel_run
    pred = predict_embeddings(run, s, "test", "average_outputs")
    tr = s.split_indices("train")
    x = np.asarray(s.betas, np.float64)
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
    xz = (x - mu) / sd
    y = np.asarray(s.images)[s.trials.image_index[tr]][..., 0].reshape(len(tr), -1) / 255.0
    from sklearn.linear_model import RidgeCV

    te_imgs, groups = s.repeat_groups("test")
    xte = np.stack([xz[g[g >= 0]] for g in groups])
    # average of single-trial predictions == prediction of the averaged betas for a linear model
    ref = RidgeCV(alphas=np.logspace(-1, 7, 17), alpha_per_target=True).fit(xz[tr], y)
    mine = np.clip(pred.embeddings, 0, 1)
    theirs = np.clip(ref.predict(xte.mean(1)), 0, 1)
    gt = np.asarray(s.images)[te_imgs][..., 0].reshape(len(te_imgs), -1) / 255.0

    def pixcorr(a):
        return np.mean([np.corrcoef(a[i], gt[i])[0, 1] for i in range(len(gt))])

    assert abs(pixcorr(mine) - pixcorr(theirs)) <= 0.02


@pytest.mark.parametrize("size", [8, 12, 28, 30, 64])
def test_thumbnails_resize_the_whole_image_never_crop(size):
    """A bright bottom-right quadrant must show in the bottom-right of the 16-px thumbnail and the 8-px embedding
    thumbnail at every size (block means cropped it away, or returned the top-left corner below 32 px)."""
    from engine.models.embedders.pixels import PixelEmbedder
    from engine.recon.blurry import thumbnails

    img = np.zeros((1, size, size, 3), np.uint8)
    img[:, size // 2:, size // 2:] = 255
    t = thumbnails(img)[0, 0]
    assert t.shape == (16, 16)
    assert t[8:, 8:].mean() > 0.95 and t[:8, :8].max() < 0.05 and abs(t.mean() - 0.25) < 0.01
    e = PixelEmbedder.thumbnails(img)[0, ..., 0]
    assert e.shape == (8, 8) and e[4:, 4:].mean() > 0.95 and abs(e.mean() - 0.25) < 0.01
