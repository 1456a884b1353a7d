"""``Decoder.open``, ``has_decoder`` and ``decoder_state`` on real run folders (tiny models)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine.errors import CheckpointError, ConfigError
from engine.events import drive
from engine.recon.decoder import (Decoder, DecoderState, decoder_state, has_decoder, read_resume_state,
                                  timestep_router_dir)
from engine.recon.finetune import finetune_job
from engine.recon.finetune_config import FinetuneConfig
from engine.recon.generators import GeneratorConfig
from engine.train.run import MODEL_INFO, Run


@pytest.fixture(scope="module")
def fresh_ridge(tmp_path_factory, tiny_subject_s):
    """A ridge run of its own (the session's ``ridge_run`` gets decoders from other tests)."""
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    folder = tmp_path_factory.mktemp("dec") / "ridge"
    drive(train_job(get_preset("tiny-ridge", tiny_subject_s), tiny_subject_s, folder))
    return folder


def test_state_of_a_run_without_a_model(tmp_path):
    from engine.train.presets import get_preset

    run = Run.create(tmp_path / "new", get_preset("tiny-ridge"))
    assert decoder_state(run.path) == DecoderState("No trained model in this run yet", False, False)
    assert not has_decoder(run.path)


def test_state_before_and_after_fine_tuning(fresh_ridge, tiny_demo_gen, tiny_subject_s, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fresh_ridge, run)
    state = decoder_state(run)
    assert not state.can_reconstruct and "'pixels' targets; fine-tune a decoder first" in state.description
    # by default the prior is fitted and the generator's own adapter kept: with no router, nothing else trains
    drive(finetune_job(run, config=FinetuneConfig(generator=str(tiny_demo_gen), max_steps=1),
                       subject=tiny_subject_s))
    assert has_decoder(run) and has_decoder(Run(run)) and timestep_router_dir(run) is None  # a ridge: no levels
    description, can, blurry = decoder_state(Run(run))  # a NamedTuple: unpacks as the panel's tuple did
    assert can and blurry and description == (f"Decoder: fine-tuned ({tiny_demo_gen} generator, UNet frozen, "
                                             "embedding prior, its adapter kept)")
    with pytest.raises(CheckpointError, match="nothing to resume"):  # complete, nothing trained step by step
        read_resume_state(Run(run).decoder_dir)
    drive(finetune_job(run, config=FinetuneConfig(generator=str(tiny_demo_gen), max_steps=1, adapter="train"),
                       subject=tiny_subject_s))
    assert decoder_state(run).description == (f"Decoder: fine-tuned ({tiny_demo_gen} generator, UNet frozen, "
                                              "embedding prior, 1 steps)")
    meta, state = read_resume_state(Run(run).decoder_dir)
    assert meta["steps"] == state["step"] == 1 and meta["config"]["max_steps"] == 1


def test_fine_tuning_keeps_the_generators_own_spatial_head_and_trains_the_rest(fresh_ridge, tiny_subject_s, tmp_path):
    """In the generator's own embedding space the adapter starts from the generator's; its layout decoder stays frozen
    (the diffusion loss on noisy brain predictions alone blurs it), the token path trains."""
    import torch

    from engine.recon.generators import load_generator
    from tests.engine.recon.tiny_models import build_tiny_demo_generator

    gen_dir = build_tiny_demo_generator(tmp_path / "gen", spatial_channels=2, spatial_head="conv")
    run = tmp_path / "run"
    shutil.copytree(fresh_ridge, run)
    drive(finetune_job(run, config=FinetuneConfig(generator=str(gen_dir), max_steps=2, lr=1e-2, adapter="train"),
                       subject=tiny_subject_s))
    own = load_generator(str(gen_dir), device="cpu").adapter.state_dict()
    tuned = Decoder.open(run).adapter.state_dict()
    spatial = [k for k in own if k.startswith("spatial_proj.")]
    assert spatial and all(torch.equal(own[k], tuned[k]) for k in spatial)
    assert not torch.equal(own["proj.weight"], tuned["proj.weight"])


def test_with_the_prior_fitted_the_generators_own_adapter_is_kept_whole(moe_run, tiny_subject_s, tmp_path):
    """adapter 'auto' (default): the prior maps the brain's predictions into the embedding the generator's adapter
    was trained on, so that adapter stays as it is, statistics included; the timestep router still trains."""
    import torch

    from engine.events import Log
    from engine.recon.generators import load_generator
    from tests.engine.recon.tiny_models import build_tiny_demo_generator

    gen_dir = build_tiny_demo_generator(tmp_path / "gen", spatial_channels=2, spatial_head="conv")
    run = tmp_path / "run"
    shutil.copytree(moe_run, run, ignore=shutil.ignore_patterns("decoder"))
    events = []
    result = drive(finetune_job(run, config=FinetuneConfig(generator=str(gen_dir), max_steps=2, prior_epochs=2,
                                                           router_lr=0.5),
                                subject=tiny_subject_s), events.append)
    own = load_generator(str(gen_dir), device="cpu").adapter.state_dict()
    dec = Decoder.open(run)
    kept = dec.adapter.state_dict()
    assert kept.keys() == own.keys() and all(torch.equal(own[k], kept[k]) for k in own)
    assert result.steps == 2 and not torch.allclose(dec.router.slope.detach(), dec.router.prior_slopes())
    assert dec.prior is not None and dec.info["adapter"] == "kept"
    assert any(isinstance(e, Log) and "kept as trained: the embedding prior maps" in e.message for e in events)
    # 'train' moves it, from the same start
    drive(finetune_job(run, config=FinetuneConfig(generator=str(gen_dir), max_steps=2, prior_epochs=2, lr=1e-2,
                                                  adapter="train"), subject=tiny_subject_s))
    assert Decoder.open(run).info["adapter"] == "trained"
    assert not torch.equal(own["proj.weight"], Decoder.open(run).adapter.state_dict()["proj.weight"])


def test_adapter_keep_without_the_generators_own_adapter_is_one_clear_line(fresh_ridge, tiny_sd15, tiny_subject_s,
                                                                           tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fresh_ridge, run)
    with pytest.raises(ConfigError, match=r"^finetune: adapter 'keep' needs the generator's own adapter for this "
                                          r"run's embedding: generator .* reads no image embedding, the run predicts "
                                          r"pixels \(64,\); use adapter 'train' or 'auto'$"):
        drive(finetune_job(run, config=FinetuneConfig(generator=str(tiny_sd15), max_steps=1, adapter="keep"),
                           subject=tiny_subject_s))
    with pytest.raises(ConfigError, match="FinetuneConfig.*adapter.*one of"):
        FinetuneConfig(adapter="frozen")


def _within_rounding(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_the_low_level_image_is_the_generators_layout_of_the_priors_output(fresh_ridge, tiny_subject_s, tmp_path):
    """With a layout (spatial) head, the blurry image a reconstruction writes and may start from is that head's map of
    the prior's output, decoded by the VAE (not the thumbnail ridge)."""
    from PIL import Image

    from engine.recon.blurry import resize, to_uint8
    from engine.recon.index import read_index
    from engine.recon.reconstruct import reconstruct_job
    from engine.recon.generators import load_generator
    from engine.recon.reconstruct_config import ReconstructConfig
    from engine.train.trained_model import TrainedModel
    from tests.engine.recon.tiny_models import build_tiny_demo_generator

    gen_dir = build_tiny_demo_generator(tmp_path / "gen", spatial_channels=4, spatial_head="conv")  # latent-shaped
    run = tmp_path / "run"
    shutil.copytree(fresh_ridge, run)
    drive(finetune_job(run, config=FinetuneConfig(generator=str(gen_dir), max_steps=2, prior_epochs=1),
                       subject=tiny_subject_s))
    dec = Decoder.open(run)
    pred = TrainedModel.open(run, tiny_subject_s).predict("test")
    layout = dec.layout(pred.embeddings[:2])
    assert layout.shape == (2, 3, dec.generator.image_size, dec.generator.image_size)
    assert 0 <= layout.min() and layout.max() <= 1
    assert not np.array_equal(layout, dec.layout(pred.embeddings[:2], from_brain=False))  # through the prior
    drive(reconstruct_job(run, ReconstructConfig(samples=1, steps=2, img2img_strength=0.5, device="cpu"),
                          subject=tiny_subject_s, trials=[200], out_dir=tmp_path / "r"))
    item = read_index(tmp_path / "r").items[0]
    written = np.asarray(Image.open(tmp_path / "r" / item.blurry).convert("RGB"))
    # the same picture up to the uint8 rounding of the VAE's output, which moves with the batch the layout is drawn in
    assert _within_rounding(written, resize(to_uint8(layout[:1]), dec.generator.image_size)[0])
    # The oracle, with the same settings, starts from the layout the generator draws from the TRUE embedding.
    oracle = {}
    for name, strength in (("o", 0.5), ("o-noise", None)):
        drive(reconstruct_job(run, ReconstructConfig(samples=1, steps=2, img2img_strength=strength, device="cpu",
                                                     source="oracle"),
                              subject=tiny_subject_s, trials=[200], out_dir=tmp_path / name))
        index = read_index(tmp_path / name)
        oracle[name] = np.asarray(Image.open(index.path / index.items[0].samples[0]))
    assert index.settings["img2img_strength"] is None and read_index(tmp_path / "o").settings["img2img_strength"] == 0.5
    true_layout = dec.layout(TrainedModel.open(run, tiny_subject_s).targets()[[item.image_index]], from_brain=False)
    written = np.asarray(Image.open(tmp_path / "o" / read_index(tmp_path / "o").items[0].blurry).convert("RGB"))
    assert _within_rounding(written, resize(to_uint8(true_layout), dec.generator.image_size)[0])
    assert not np.array_equal(oracle["o"], oracle["o-noise"])
    dec.adapter.spatial_proj = None  # an adapter without a layout head (Stable Diffusion's) has none
    assert dec.layout(pred.embeddings[:2]) is None
    gen2 = load_generator(str(build_tiny_demo_generator(tmp_path / "gen2", spatial_channels=2, spatial_head="conv")),
                          device="cpu")
    assert Decoder(gen2, gen2.adapter).layout(pred.embeddings[:2]) is None  # a map that is not latent-shaped


def test_zero_shot_state_of_a_demo_embedding_run(fresh_ridge, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fresh_ridge, run)
    info_path = Run(run).model_dir / MODEL_INFO
    info = json.loads(info_path.read_text())
    info.update(embedder="demo", target="pooled")
    info_path.write_text(json.dumps(info))
    state = decoder_state(run)
    # the ridge has no low-level head, but the shipped demo generator draws its own layout
    assert state.can_reconstruct and "zero-shot" in state.description and state.has_blurry


def test_decoder_open_reads_the_runs_model_info_itself(fresh_ridge, tiny_demo_gen, tmp_path):
    # No decoder: the generator reads the run's embeddings directly when they are its own (pixels, 64-d here).
    gcfg = GeneratorConfig(spec=str(tiny_demo_gen), device="cpu")
    dec = Decoder.open(fresh_ridge, gcfg)
    assert dec.info == {"zero_shot": True} and dec.adapter is dec.generator.adapter
    assert dec.router is None and dec.blurry is None and dec.encoder_dir is None


def test_reconstruction_conditions_on_the_trained_models_prediction(fresh_ridge, tiny_demo_gen, tiny_subject_s,
                                                                     tmp_path):
    # What reconstruct conditions on (embeddings.npz 'brain') is TrainedModel.predict of the same run and split.
    from engine.recon.index import load_embeddings
    from engine.recon.reconstruct import reconstruct_job
    from engine.recon.reconstruct_config import ReconstructConfig
    from engine.train.trained_model import TrainedModel

    config = ReconstructConfig(samples=1, steps=2, generator=str(tiny_demo_gen), device="cpu")
    drive(reconstruct_job(fresh_ridge, config, subject=tiny_subject_s, trials=[200, 204], out_dir=tmp_path / "r"))
    z = load_embeddings(tmp_path / "r")
    pred = TrainedModel.open(fresh_ridge, tiny_subject_s).predict("test")
    rows = np.searchsorted(pred.image_index, z["image_index"])
    assert list(z["image_index"]) == [200, 201]
    assert np.array_equal(z["brain"], pred.embeddings[rows]) and np.array_equal(z["target"], pred.targets[rows])
