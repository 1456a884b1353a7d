"""A generator trained on the subject's own images: training, resume, loading through load_generator, the fingerprint
check, and the whole route (PCA-embedding ridge → finetune → reconstruct) on a grey 12-px subject."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import Cancelled, ConfigError
from engine.events import CancelToken, Checkpoint, drive
from engine.recon.own_generator import OwnGeneratorConfig, train_generator_job
from tests.engine.recon.test_pixel_ridge import grey_subject

TINY = OwnGeneratorConfig(n_components=8, unet_channels=(16, 16, 32), steps=6, batch_size=4, checkpoint_every=2,
                          warmup=2)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from engine.data.native import read_native, write_subject

    s = grey_subject(n_train=40, n_test=6, size=12, n_voxels=60)
    rng = np.random.default_rng(3)
    s.prior_images = np.repeat(rng.integers(0, 255, (10, 12, 12, 1), dtype=np.uint8), 3, -1)
    return read_native(write_subject(s, tmp_path_factory.mktemp("own") / "s.nlsubj"))


@pytest.fixture(scope="module")
def generator(subject, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "gen"
    drive(train_generator_job(subject, out, config=TINY, device="cpu"))
    return out


def test_trained_on_training_stimuli_and_prior_images_never_test(generator, subject):
    meta = json.loads((generator / "generator.json").read_text())
    assert meta["kind"] == "own" and meta["grey"] and meta["channels"] == 1 and meta["image_size"] == 12
    assert meta["images"]["training stimuli"] == 40 and meta["images"]["prior images"] == 10
    test = {np.asarray(subject.images[i]).tobytes() for i in subject.split_images("test")}
    learned = [np.asarray(subject.images[i]) for i in subject.split_images("train")] + list(subject.prior_images)
    assert meta["images"]["dropped (identical to a test stimulus)"] == sum(im.tobytes() in test for im in learned)


def test_loads_through_load_generator_and_samples_grey_images(generator):
    import torch

    from engine.recon.generators import load_generator
    from engine.recon.sampler import SamplerConfig, denoise

    gen = load_generator(str(generator), device="cpu")
    assert gen.kind == "own" and gen.image_size == 12 and gen.latent_channels == 1
    emb = torch.zeros(2, 8)
    cond = gen.adapter(emb)
    loop = denoise(gen, cond, gen.adapter.null_condition(2), SamplerConfig(steps=3, guidance=2.0), seeds=[0, 1])
    while True:
        try:
            next(loop)
        except StopIteration as stop:
            images = gen.decode(stop.value)
            break
    assert images.shape == (2, 12, 12, 3) and (images[..., 0] == images[..., 2]).all()


def test_cancel_then_resume_gives_the_uninterrupted_result(subject, generator, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "gen"
    token = CancelToken()
    events = []

    def on_event(e):
        events.append(e)
        if isinstance(e, Checkpoint) and e.step == 2:
            token.set()

    with pytest.raises(Cancelled):
        drive(train_generator_job(subject, out, config=TINY, device="cpu", cancel=token), on_event)
    assert not out.exists() and (tmp_path / "gen.resume" / "state.json").is_file()
    drive(train_generator_job(subject, out, resume=True, device="cpu"))
    assert not (tmp_path / "gen.resume").exists()
    a = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(generator / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_existing_folder_is_not_overwritten(subject, generator):
    with pytest.raises(ConfigError, match="already exists"):
        drive(train_generator_job(subject, generator, config=TINY, device="cpu"))


def test_generator_of_other_images_is_one_clear_line(generator, tmp_path):
    from engine.data.native import read_native, write_subject
    from engine.recon.generators import load_generator
    from engine.recon.own_generator import check_generator_subject

    other = read_native(write_subject(grey_subject(n_train=40, n_test=6, size=12, n_voxels=60, seed=9),
                                      tmp_path / "o.nlsubj"))
    gen = load_generator(str(generator), device="cpu")
    with pytest.raises(ConfigError) as e:
        check_generator_subject(gen, other)
    assert "trained on other images" in str(e.value) and "\n" not in str(e.value)


def test_the_generator_route_end_to_end(subject, generator, tmp_path):
    """PCA-embedding ridge → finetune with the generator → reconstruct: grey samples of the stimulus size."""
    from PIL import Image

    from engine.recon.finetune import finetune_job
    from engine.recon.finetune_config import FinetuneConfig
    from engine.recon.reconstruct import reconstruct_job
    from engine.recon.reconstruct_config import ReconstructConfig
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    cfg = get_preset("demo-ridge", subject).with_overrides({"data": {"embedder": str(generator)}})
    drive(train_job(cfg, subject, tmp_path / "run"))
    drive(finetune_job(tmp_path / "run", config=FinetuneConfig(generator=str(generator), epochs=1, batch_size=8,
                                                               device="cpu")))
    # a generator of the subject's own images takes the ridge's principal-component scores as they are: no prior
    assert not (tmp_path / "run" / "decoder" / "embedding_prior").exists()
    res = drive(reconstruct_job(tmp_path / "run", ReconstructConfig(samples=2, steps=3, device="cpu"),
                                subject=subject, out_dir=tmp_path / "rec"))
    index = json.loads((tmp_path / "rec" / "index.json").read_text())
    assert res.n_images == 6 and index["settings"]["generator"] == str(generator)
    with Image.open(tmp_path / "rec" / index["items"][0]["samples"][1]) as im:
        assert im.mode == "L" and im.size == (12, 12)
    # the low-level image: the predicted principal-component scores mapped back to pixels
    from engine.models.embedders import load_image_embedder
    from engine.recon.blurry import to_uint8
    from engine.recon.generators import load_generator
    from engine.recon.own_generator import embedding_images

    brain = np.load(tmp_path / "rec" / "embeddings.npz")["brain"]
    want = to_uint8(embedding_images(load_generator(str(generator), device="cpu"), brain[:1]))[0, ..., 0]
    with Image.open(tmp_path / "rec" / index["items"][0]["blurry"]) as im:
        assert np.abs(np.asarray(im).astype(int) - want).max() <= 1
    pca = load_image_embedder(str(generator))
    gt = np.asarray(subject.images)[subject.split_images("test")]
    back = to_uint8(embedding_images(load_generator(str(generator), device="cpu"), pca.embed(gt)))
    assert np.corrcoef(back[..., 0].ravel(), gt[..., 0].ravel())[0, 1] > 0.5  # the decode inverts the embedder
