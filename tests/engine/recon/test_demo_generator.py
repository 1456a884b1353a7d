import dataclasses

import numpy as np

from engine.events import Metric, Progress, drive
from engine.recon.demo_generator import (DemoGeneratorConfig, DemoTrainConfig, refit_demo_adapter,
                                         train_demo_generator)
from engine.recon.generators import load_generator
from tests.engine.recon.tiny_models import TINY_DEMO


def test_the_shipped_demo_generator_loads_and_samples():
    from engine.recon.sampler import SamplerConfig, sample_latents
    import torch

    gen = load_generator("demo", device="cpu")
    assert gen.kind == "demo" and gen.image_size == 64 and gen.embedder == "demo"
    assert gen.adapter.config.input_shape == (128,)
    with torch.no_grad():
        cond = gen.adapter(torch.zeros(1, 128))
    lat = sample_latents(gen, cond, gen.adapter.null_condition(1), SamplerConfig(steps=2))
    assert gen.decode(lat).shape == (1, 64, 64, 3)


def _tiny_build(seed: int, unet_steps: int):
    """16 random 32-px images with 12-d embeddings, a few-step recipe and a tiny architecture."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    emb = rng.standard_normal((16, 12)).astype(np.float32)
    recipe = dataclasses.replace(DemoTrainConfig(), vae_steps=2, unet_steps=unet_steps, vae_batch=4, unet_batch=4,
                                 warmup=1, unet_cycles=1)
    return images, emb, recipe, DemoGeneratorConfig(embed_dim=12, **TINY_DEMO)


def test_training_recipe_runs_and_writes_a_loadable_generator(tmp_path):
    images, emb, recipe, cfg = _tiny_build(0, unet_steps=2)
    events = []
    folder = drive(train_demo_generator(tmp_path / "g", recipe, cfg, images=images, embeddings=emb,
                                        embedder_identity="test"), events.append)
    assert [e.step for e in events if isinstance(e, Progress)][-1] == 4
    assert any(isinstance(e, Metric) and e.name == "diffusion_loss" for e in events)
    gen = load_generator(str(folder), device="cpu")
    assert gen.image_size == 32 and gen.adapter.config.input_shape == (12,)
    assert gen.info["recipe"]["unet_steps"] == 2
    assert abs(gen.scaling_factor - 1.0) > 0 and np.isfinite(gen.scaling_factor)

    # The embedder changed: refit only the adapter, in place; VAE and UNet stay byte-identical.
    unet_before = (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    drive(refit_demo_adapter(folder, recipe, steps=2, images=images, embeddings=emb[::-1].copy(),
                             embedder_identity="new"))
    again = load_generator(str(folder), device="cpu")
    assert again.info["embedder_identity"] == "new" and again.info["adapter_refit"]["steps"] == 2
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == unet_before


def test_a_build_continued_with_more_unet_cycles_equals_one_from_scratch(tmp_path):
    from safetensors.torch import load_file

    images, emb, one, cfg = _tiny_build(1, unet_steps=3)
    two = dataclasses.replace(one, unet_cycles=2)
    kw = dict(images=images, embeddings=emb, embedder_identity="test")
    drive(train_demo_generator(tmp_path / "scratch", two, cfg, **kw))
    drive(train_demo_generator(tmp_path / "first", one, cfg, **kw))
    events = []
    drive(train_demo_generator(tmp_path / "cont", two, cfg, continue_from=tmp_path / "first", **kw), events.append)
    assert [e.step for e in events if isinstance(e, Progress)] == [6, 7, 8]  # VAE 2 + cycle 1 (3) already done
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "adapter/model.safetensors"):
        a, b = load_file(str(tmp_path / "scratch" / part)), load_file(str(tmp_path / "cont" / part))
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), part
    unet = "unet/diffusion_pytorch_model.safetensors"
    first, scratch = load_file(str(tmp_path / "first" / unet)), load_file(str(tmp_path / "scratch" / unet))
    assert not all(np.array_equal(first[k].numpy(), scratch[k].numpy()) for k in first)  # cycle 2 did train
    assert load_generator(str(tmp_path / "cont"), device="cpu").info["recipe"]["unet_cycles"] == 2
