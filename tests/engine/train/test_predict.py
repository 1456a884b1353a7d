"""predict_embeddings: shapes, repeat modes, and agreement with the trainer's own test metrics."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import open_subject
from engine.events import drive
from engine.train.evaluation import embedding_metrics
from engine.train.predict import load_encoder, predict_embeddings
from engine.train.trainer import train_job
from tests.engine.train.conftest import tiny_config


@pytest.fixture(scope="module")
def runs(tiny_subject_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    out = {}
    for kind in ("ridge", "mlp"):
        out[kind] = drive(train_job(tiny_config(kind, epochs=1), tiny_subject_path, root / kind))
    return out


@pytest.mark.parametrize("kind", ["ridge", "mlp"])
def test_shapes_and_repeat_modes(kind, runs, tiny_subject_path):
    subject = open_subject(tiny_subject_path)
    p = predict_embeddings(runs[kind].run_dir, subject, split="test")
    n, shape = 8, (64,)
    assert p.image_index.shape == (n,) and np.all(np.diff(p.image_index) > 0)
    assert p.embeddings.shape == p.targets.shape == (n, *shape)
    assert p.per_repeat.shape == (n, 2, *shape) and p.blurry is None
    np.testing.assert_allclose(p.per_repeat.mean(axis=1), p.embeddings, rtol=1e-5, atol=1e-6)
    # The trainer evaluated exactly these predictions.
    m = embedding_metrics(p.embeddings, p.targets)
    assert m["two_way"] == pytest.approx(runs[kind].metrics["two_way"])

    v = predict_embeddings(runs[kind].run_dir, str(tiny_subject_path), repeat_mode="average_voxels")
    assert v.embeddings.shape == (n, *shape) and v.per_repeat is None
    if kind == "ridge":  # linear: averaging voxels or outputs is the same
        np.testing.assert_allclose(v.embeddings, p.embeddings, rtol=1e-4, atol=1e-5)

    t = predict_embeddings(runs[kind].run_dir, subject, split="train")
    assert t.embeddings.shape == (96, *shape) and t.per_repeat.shape == (96, 1, *shape)


def test_load_encoder_kinds(runs):
    from engine.models.base import BrainEncoder
    from engine.models.ridge import RidgeCV

    assert isinstance(load_encoder(runs["ridge"].run_dir), RidgeCV)
    enc = load_encoder(runs["mlp"].run_dir)
    assert isinstance(enc, BrainEncoder) and not enc.training
