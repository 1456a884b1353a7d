"""Encoding models and maps: fit on the tiny subject, save/load, predict, the job, the CLI, the demo ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import Cancelled, CheckpointError, DataError
from engine.events import CancelToken, Finished, Metric, Progress, Started, drive
from engine.models.encoding import (EncodingMaps, EncodingModel, fit_encoding, load_encoding_accuracy, predict_voxels,
                                    session_zscore)
from engine.models.encoding_job import encode_job
from engine.models.ridge import RidgeCV


def _pixels(subject):
    return np.asarray(subject.images, np.float32).reshape(subject.n_images, -1) / 255.0


@pytest.fixture
def small_image_subject():
    from tests.helpers import make_tiny_subject

    return make_tiny_subject(n_train=300, size=4)


def test_fit_encoding_recovers_linear_voxels(small_image_subject):
    maps = fit_encoding(_pixels(small_image_subject), small_image_subject)
    assert maps.test_r.shape == (64,) and maps.test_r.dtype == np.float32
    assert np.median(maps.test_r) > 0.4  # voxels are a linear function of the 48 pixel values plus noise
    np.testing.assert_allclose(maps.normalized_r, maps.test_r / 0.5, rtol=1e-5)
    assert set(maps.meta["rois"]) == {"V1", "LO"}
    assert maps.meta["n_test_images"] == 10 and maps.meta["max_repeats"] == 3
    pixels_r = maps.test_r
    noise = np.random.default_rng(1).standard_normal((small_image_subject.n_images, 48)).astype(np.float32)
    assert np.median(fit_encoding(noise, small_image_subject).test_r) < np.median(pixels_r) - 0.2


def test_maps_save_load_and_predict(small_image_subject, tmp_path):
    feats = _pixels(small_image_subject)
    maps = fit_encoding(feats, small_image_subject)
    maps.meta["embedder"] = "pixels"
    maps.save(tmp_path)
    assert {"encoding.npz", "encoding.json", "encoding-model"} <= {p.name for p in tmp_path.iterdir()}
    back = EncodingMaps.load(tmp_path)
    np.testing.assert_array_equal(back.test_r, maps.test_r)
    assert back.meta["embedder"] == "pixels"
    np.testing.assert_array_equal(load_encoding_accuracy(tmp_path), maps.test_r)
    p1 = predict_voxels(maps, feats[:7])
    assert p1.shape == (7, 64) and p1.dtype == np.float32
    np.testing.assert_allclose(predict_voxels(back, feats[:7]), p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict_voxels(tmp_path, feats[:7]), p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predict_voxels(EncodingModel.load(tmp_path / "encoding-model"), feats[:7]), p1,
                               rtol=1e-5, atol=1e-6)
    with np.load(tmp_path / "encoding.npz", allow_pickle=False) as z:
        assert set(z.files) == {"test_r", "test_r2", "noise_ceiling", "normalized_r", "alpha"}


def test_predict_voxels_inputs(tiny_subject, tmp_path):
    feats = _pixels(tiny_subject)
    ridge = RidgeCV(alphas=[1.0]).fit(feats[:50], np.asarray(tiny_subject.betas[:50]))
    assert predict_voxels(ridge, feats[:3]).shape == (3, 64)
    maps = fit_encoding(feats, tiny_subject)
    with pytest.raises(DataError, match="do not match"):
        predict_voxels(maps, feats[:3, :10])
    maps.model = None
    with pytest.raises(CheckpointError):
        predict_voxels(maps, feats[:3])
    with pytest.raises(FileNotFoundError):
        EncodingMaps.load(tmp_path)


def test_session_zscore():
    b = np.array([[1.0, 10.0], [3.0, 10.0], [100.0, 0.0], [102.0, 2.0]], np.float32)
    z = session_zscore(b, np.array([1, 1, 2, 2]))
    np.testing.assert_allclose(z, [[-1, 0], [1, 0], [-1, -1], [1, 1]])


def test_encode_job_events_and_cancel(tiny_subject, tmp_path):
    events = []
    maps = drive(encode_job(tiny_subject, tmp_path / "run", embedder="demo", cache_dir=tmp_path / "cache"),
                 events.append)
    kinds = [type(e) for e in events]
    assert kinds[0] is Started and kinds[-1] is Finished and Progress in kinds and Metric in kinds
    assert maps.n_voxels == 64 and (tmp_path / "run" / "encoding.npz").is_file()
    assert maps.meta["embedder"] == "demo" and maps.meta["n_features"] == 128
    from engine.models.encoding import predict_voxels_for_images

    pred = predict_voxels_for_images(tmp_path / "run", tiny_subject.images[:4])
    assert pred.shape == (4, 64) and pred.dtype == np.float32
    cancel = CancelToken()
    job = encode_job(tiny_subject, tmp_path / "run2", cancel=cancel, cache_dir=tmp_path / "cache")
    next(job)
    cancel.set()
    with pytest.raises(Cancelled):
        drive(job)
    assert not (tmp_path / "run2" / "encoding.npz").exists()


def test_encode_cli_json_events(tiny_subject, tmp_path, capsys, monkeypatch):
    from engine.cli.main import main
    from engine.data.native import write_subject

    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path / "cache"))
    subj = write_subject(tiny_subject, tmp_path / "tiny.nlsubj")
    rc = main(["encode", "--data", str(subj), "--out", str(tmp_path / "run"), "--json-events", "--features", "tokens"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0]["event"] == "Started" and lines[-1]["event"] == "Finished"
    assert EncodingMaps.load(tmp_path / "run").meta["n_features"] == 16 * 128
    rc = main(["encode", "--data", str(subj), "--out", str(tmp_path / "run3"), "--embedder", str(tmp_path / "none")])
    assert rc == 2
    assert "missing" in capsys.readouterr().err


def test_prf_centres_from_contrast_energy():
    from engine.models.encoding_ground_truth import contrast_energy, estimate_prf_centres

    rng = np.random.default_rng(0)
    n, size = 400, 32
    images = np.zeros((n, size, size, 3), np.uint8)
    pos = rng.integers(2, size - 6, size=(n, 2))
    for i, (r, c) in enumerate(pos):
        images[i, r : r + 4, c : c + 4] = 255
    energy = contrast_energy(images, grid=16)
    assert energy.shape == (n, 16, 16)
    true = rng.uniform(0.2, 0.8, size=(30, 2))  # (x, y) in [0, 1]
    yy, xx = (np.mgrid[0:16, 0:16] + 0.5) / 16
    prf = np.exp(-((xx[None] - true[:, 0, None, None]) ** 2 + (yy[None] - true[:, 1, None, None]) ** 2) / 0.02)
    responses = energy.reshape(n, -1) @ prf.reshape(30, -1).T + 0.05 * rng.standard_normal((n, 30))
    est = estimate_prf_centres(responses, energy)
    assert np.corrcoef(est[:, 0], true[:, 0])[0, 1] > 0.9
    assert np.corrcoef(est[:, 1], true[:, 1])[0, 1] > 0.9


def test_category_tuning_is_the_encoding_model_averaged_per_category(tiny_subject, tmp_path):
    from engine.models.encoding import category_tuning
    from engine.models.embedders.pixels import PixelEmbedder

    s, emb_model = tiny_subject, PixelEmbedder()
    emb = emb_model.embed(s.images)
    maps = fit_encoding(emb, s)
    tuning, cats = category_tuning(maps, s, embedder=emb_model, cache_dir=tmp_path)
    assert cats == ["a", "b", "c", "d"] and tuning.shape == (64, 4)
    pred = predict_voxels(maps, emb)
    for k in range(4):
        np.testing.assert_allclose(tuning[:, k], pred[s.stimuli.labels == k].mean(0), rtol=1e-4, atol=1e-5)
    import dataclasses

    s.stimuli = dataclasses.replace(s.stimuli, labels=None)
    with pytest.raises(DataError, match="category labels"):
        category_tuning(maps, s, embedder=emb_model, cache_dir=tmp_path)
