"""The embedding prior: fitted on (prediction, true embedding) pairs, saved and loaded, used by finetune and
reconstruct for the brain's predictions only."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engine.errors import CheckpointError
from engine.events import CancelToken, drive
from engine.recon.embedding_prior import EmbeddingPrior, fit_embedding_prior


def _clustered_pairs(n: int, seed: int):
    """True embeddings in 4 tight clusters; predictions shrunk towards the mean, with noise (as a ridge's are)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16)).astype(np.float32) * 3
    labels = rng.integers(0, 4, n)
    true = centres[labels] + 0.1 * rng.normal(size=(n, 16)).astype(np.float32)
    pred = 0.3 * true + 0.5 * rng.normal(size=(n, 16)).astype(np.float32)
    return pred, true


def test_the_prior_brings_held_out_predictions_closer_to_their_true_embeddings():
    pred, true = _clustered_pairs(600, 0)
    prior = drive(fit_embedding_prior(pred[:500], true[:500], steps=400, noise=0.5, seed=0, cancel=CancelToken()))
    mapped = prior.map_array(pred[500:])
    raw_err = ((pred[500:] - true[500:]) ** 2).mean()
    assert ((mapped - true[500:]) ** 2).mean() < 0.2 * raw_err


def test_fitting_is_seeded_and_leaves_torchs_global_random_stream_alone():
    pred, true = _clustered_pairs(200, 1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = drive(fit_embedding_prior(pred, true, steps=20, noise=0.5, seed=3, cancel=CancelToken()))
    assert torch.equal(torch.rand(3), expected)  # the job around it draws what it would have drawn without it
    b = drive(fit_embedding_prior(pred, true, steps=20, noise=0.5, seed=3, cancel=CancelToken()))
    c = drive(fit_embedding_prior(pred, true, steps=20, noise=0.5, seed=4, cancel=CancelToken()))
    assert np.array_equal(a.map_array(pred), b.map_array(pred))
    assert not np.allclose(a.map_array(pred), c.map_array(pred))


def test_save_and_load_give_the_same_mapping(tmp_path):
    pred, true = _clustered_pairs(100, 2)
    prior = drive(fit_embedding_prior(pred, true, steps=10, noise=0.0, seed=0, cancel=CancelToken()))
    prior.save(tmp_path / "p")
    assert np.array_equal(EmbeddingPrior.load(tmp_path / "p").map_array(pred), prior.map_array(pred))
    (tmp_path / "p" / "config.json").write_text(json.dumps({"class": "Other"}))
    with pytest.raises(CheckpointError, match="not an embedding prior folder"):
        EmbeddingPrior.load(tmp_path / "p")


def _fine_tuned_run(tmp_path, subject, **finetune):
    """A tiny ridge run whose decoder is fine-tuned for a tiny demo generator with ``finetune`` settings."""
    from engine.recon.finetune import finetune_job
    from engine.recon.finetune_config import FinetuneConfig
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job
    from tests.engine.recon.tiny_models import build_tiny_demo_generator

    gen_dir = build_tiny_demo_generator(tmp_path / "gen")
    run = tmp_path / "run"
    drive(train_job(get_preset("tiny-ridge", subject), subject, run))
    drive(finetune_job(run, config=FinetuneConfig(generator=str(gen_dir), **finetune), subject=subject))
    return run, gen_dir


def test_fine_tuning_fits_a_prior_that_reconstruction_uses_for_the_brain_not_the_oracle(tmp_path, tiny_subject_s):
    from engine.recon.decoder import Decoder
    from engine.recon.finetune import finetune_job
    from engine.recon.finetune_config import FinetuneConfig

    run, gen_dir = _fine_tuned_run(tmp_path, tiny_subject_s, max_steps=1, prior_epochs=30)
    dec = Decoder.open(run)
    assert dec.prior is not None and dec.info["prior"] is True and dec.info["config"]["prior_epochs"] == 30
    e = torch.randn(3, *dec.adapter.config.input_shape)
    with torch.no_grad():
        brain, oracle = dec.condition(e), dec.condition(e, from_brain=False)
        assert torch.equal(oracle.tokens, dec.adapter(e).tokens)
        assert torch.allclose(brain.tokens, dec.adapter(dec.prior(e)).tokens)
        assert not torch.allclose(brain.tokens, oracle.tokens)

    off = tmp_path / "off"
    shutil.copytree(run, off)
    shutil.rmtree(off / "decoder")
    drive(finetune_job(off, config=FinetuneConfig(generator=str(gen_dir), max_steps=1, prior_epochs=0),
                       subject=tiny_subject_s))
    assert Decoder.open(off).prior is None and not (off / "decoder" / "embedding_prior").exists()


def test_reconstruct_draws_the_brain_rows_through_the_prior_and_the_oracle_without_it(tmp_path, tiny_subject_s):
    """Same run and seeds: removing the decoder's prior changes the brain's samples, not the oracle's."""
    from PIL import Image

    from engine.recon.index import read_index
    from engine.recon.reconstruct import reconstruct_job
    from engine.recon.reconstruct_config import ReconstructConfig

    run, _ = _fine_tuned_run(tmp_path, tiny_subject_s, max_steps=20, prior_epochs=20)

    def samples(source: str, out: str) -> np.ndarray:
        cfg = ReconstructConfig(samples=1, steps=2, device="cpu", source=source)
        drive(reconstruct_job(run, cfg, subject=tiny_subject_s, trials=[200, 204], out_dir=tmp_path / out))
        index = read_index(tmp_path / out)
        return np.stack([np.asarray(Image.open(index.path / s)) for it in index.items for s in it.samples])

    brain, oracle = samples("brain", "b1"), samples("oracle", "o1")
    shutil.rmtree(run / "decoder" / "embedding_prior")
    assert not np.array_equal(samples("brain", "b2"), brain)
    assert np.array_equal(samples("oracle", "o2"), oracle)
