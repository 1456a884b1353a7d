import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelFolderError
from engine.events import Metric, Progress, drive
from engine.recon.demo_generator import DemoGeneratorConfig
from engine.recon.demo_refit import refit_demo_adapter, refit_vae_decoder
from engine.recon.demo_training import DemoTrainConfig, train_demo_generator
from engine.recon.generators import load_generator
from tests.engine.recon.tiny_models import TINY_DEMO

BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "resources" / "build" / "build_demo_generator.py"


def _build_script():
    """The build script, imported as a module."""
    spec = importlib.util.spec_from_file_location("build_demo_generator", BUILD_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _stopped_build(out, recipe, cfg, kw, *, checkpoint_every: int, stop_after: str):
    """A build cancelled right after its first log line starting with ``stop_after`` (the token fires on the next
    step, so the checkpoint that line reports is the last one written)."""
    from engine.events import Cancelled, CancelToken, Log

    token = CancelToken()

    def stop(event):
        if isinstance(event, Log) and event.message.startswith(stop_after):
            token.set()

    with pytest.raises(Cancelled):
        drive(train_demo_generator(out, recipe, cfg, checkpoint_every=checkpoint_every, cancel=token, **kw), stop)


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
                                 warmup=1, unet_cycles=1, spatial_pretrain_steps=3, spatial_pretrain_batch=4,
                                 vae_decoder_steps=2)
    return images, emb, recipe, DemoGeneratorConfig(embed_dim=12, **TINY_DEMO)


def test_training_recipe_runs_and_writes_a_loadable_generator(tmp_path):
    images, emb, recipe, cfg = _tiny_build(0, unet_steps=2)
    events = []
    folder = drive(train_demo_generator(tmp_path / "g", recipe, cfg, images=images, embeddings=emb,
                                        embedder_identity="test"), events.append)
    assert [e.step for e in events if isinstance(e, Progress)][-1] == 6  # VAE 2 + its decoder 2 + UNet 2
    assert {"vae_loss", "vae_decoder_loss", "diffusion_loss"} <= {e.name for e in events if isinstance(e, Metric)}
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


def test_a_refit_of_the_vae_decoder_changes_only_the_decoder_in_place(tmp_path):
    """``refit_vae_decoder``: the decoder learns further (its loss on the training images falls), the encoder, hence
    every latent the UNet and the layout map work in, and every other part stay byte-identical; the manifest records
    each refit."""
    import torch
    from safetensors.torch import load_file

    images, emb, recipe, cfg = _tiny_build(3, unet_steps=1)
    folder = drive(train_demo_generator(tmp_path / "g", recipe, cfg, images=images, embeddings=emb,
                                        embedder_identity="test"))
    vae_file = folder / "vae" / "diffusion_pytorch_model.safetensors"
    before = load_file(str(vae_file))
    others = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and "vae" not in p.parts
              and p.name != "generator.json"}

    def reconstruction_error(gen):
        with torch.no_grad():
            return float(np.abs(gen.decode(gen.encode(images)).astype(float) - images).mean())

    err_before = reconstruction_error(load_generator(str(folder), device="cpu"))
    events = []
    refit = dataclasses.replace(recipe, warmup=1)
    for _ in range(2):
        drive(refit_vae_decoder(folder, refit, steps=30, lr=3e-3, images=images), events.append)
    after = load_file(str(vae_file))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed), sorted(changed)[:5]
    assert {p: p.read_bytes() for p in others} == others
    gen = load_generator(str(folder), device="cpu")
    assert [r["steps"] for r in gen.info["vae_decoder_refits"]] == [30, 30]
    assert reconstruction_error(gen) < err_before
    assert [e.step for e in events if isinstance(e, Progress)][-1] == 30


def test_a_build_continued_with_more_unet_cycles_equals_one_from_scratch(tmp_path):
    from safetensors.torch import load_file

    images, emb, one, cfg = _tiny_build(1, unet_steps=3)
    two = dataclasses.replace(one, unet_cycles=2)
    kw = dict(images=images, embeddings=emb, embedder_identity="test")
    drive(train_demo_generator(tmp_path / "scratch", two, cfg, **kw))
    drive(train_demo_generator(tmp_path / "first", one, cfg, **kw))
    events = []
    drive(train_demo_generator(tmp_path / "cont", two, cfg, continue_from=tmp_path / "first", **kw), events.append)
    assert [e.step for e in events if isinstance(e, Progress)] == [8, 9, 10]  # VAE 2 + decoder 2 + cycle 1 (3) done
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "adapter/model.safetensors"):
        a, b = load_file(str(tmp_path / "scratch" / part)), load_file(str(tmp_path / "cont" / part))
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), part
    unet = "unet/diffusion_pytorch_model.safetensors"
    first, scratch = load_file(str(tmp_path / "first" / unet)), load_file(str(tmp_path / "scratch" / unet))
    assert not all(np.array_equal(first[k].numpy(), scratch[k].numpy()) for k in first)  # cycle 2 did train
    assert load_generator(str(tmp_path / "cont"), device="cpu").info["recipe"]["unet_cycles"] == 2


def test_a_build_resumed_from_a_mid_cycle_checkpoint_equals_one_from_scratch(tmp_path):
    """The spatial condition trains and samples; a checkpoint with its optimizer state resumes bit-identically."""
    from safetensors.torch import load_file

    from engine.recon.sampler import SamplerConfig, sample_latents
    import torch

    images, emb, recipe, cfg = _tiny_build(2, unet_steps=4)
    cfg = dataclasses.replace(cfg, spatial_channels=2, spatial_head="conv")
    kw = dict(images=images, embeddings=emb, embedder_identity="test")
    drive(train_demo_generator(tmp_path / "scratch", recipe, cfg, **kw))
    _stopped_build(tmp_path / "ckpt", recipe, cfg, kw, checkpoint_every=2, stop_after="checkpoint after 2 UNet steps")
    state = load_generator(str(tmp_path / "ckpt"), device="cpu").info["train_state"]
    assert state == {"cycle": 0, "step": 2, "complete": False}
    events = []
    drive(train_demo_generator(tmp_path / "ckpt", recipe, cfg, continue_from=tmp_path / "ckpt", **kw), events.append)
    # VAE 2 + decoder 2 + spatial head 3 + 2 UNet steps already done
    assert [e.step for e in events if isinstance(e, Progress)] == [10, 11]
    for part in ("unet/diffusion_pytorch_model.safetensors", "adapter/model.safetensors"):
        a, b = load_file(str(tmp_path / "scratch" / part)), load_file(str(tmp_path / "ckpt" / part))
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), part
    assert not (tmp_path / "ckpt" / "train_state").exists()  # the finished folder ships without optimizer state

    gen = load_generator(str(tmp_path / "ckpt"), device="cpu")
    assert gen.unet.config.in_channels == 4 + 2 and gen.latent_channels == 4
    with torch.no_grad():
        cond = gen.adapter(torch.from_numpy(emb[:2]))
    assert cond.spatial.shape == (2, 2, 16, 16)
    null = gen.adapter.null_condition(2)
    assert null.spatial.shape == (2, 2, 16, 16) and not null.spatial.any()
    lat = sample_latents(gen, cond, null, SamplerConfig(steps=2, guidance=3.0))
    assert lat.shape == (2, 4, 16, 16) and gen.decode(lat).shape == (2, 32, 32, 3)

    # A refit of the adapter pre-trains its fresh conv layout decoder first, as the build does.
    events = []
    drive(refit_demo_adapter(tmp_path / "ckpt", recipe, steps=1, images=images, embeddings=emb), events.append)
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3, 4]  # 3 pre-training steps + 1
    assert any(isinstance(e, Metric) and e.name == "spatial_pretrain_loss" for e in events)


@pytest.mark.parametrize("stop_after, progress_after", [
    ("checkpoint after the VAE stage", [5, 6, 7, 8, 9, 10, 11]),  # VAE 2 + decoder 2 done: head 3 + UNet 4 to go
    ("checkpoint before the first UNet step", [8, 9, 10, 11]),  # ... and the spatial head's 3
])
def test_a_build_stopped_before_its_first_unet_step_resumes_exactly(tmp_path, stop_after, progress_after):
    """The stages before the UNet (~40 min of the 2 CPU cores for a full build) are checkpointed too: after the VAE
    stage (the VAE and torch's random state, which the fresh UNet and adapter are drawn from) and after the spatial
    head's pre-training; a build continued from either equals one from scratch, bit for bit."""
    from safetensors.torch import load_file

    images, emb, recipe, cfg = _tiny_build(5, unet_steps=4)
    cfg = dataclasses.replace(cfg, spatial_channels=2, spatial_head="conv")
    kw = dict(images=images, embeddings=emb, embedder_identity="test")
    drive(train_demo_generator(tmp_path / "scratch", recipe, cfg, **kw))
    _stopped_build(tmp_path / "ckpt", recipe, cfg, kw, checkpoint_every=100, stop_after=stop_after)
    if stop_after.endswith("VAE stage"):
        assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["generator.json", "train_state", "vae"]
        with pytest.raises(ModelFolderError, match="missing unet/ .*checkpoint after its vae stage.*--continue-from"):
            load_generator(str(tmp_path / "ckpt"), device="cpu")
    else:
        assert load_generator(str(tmp_path / "ckpt"), device="cpu").info["train_state"] == {
            "cycle": 0, "step": 0, "complete": False}
    events = []
    drive(train_demo_generator(tmp_path / "ckpt", recipe, cfg, continue_from=tmp_path / "ckpt", **kw), events.append)
    assert [e.step for e in events if isinstance(e, Progress)] == progress_after
    for part in ("vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                 "adapter/model.safetensors"):
        a, b = load_file(str(tmp_path / "scratch" / part)), load_file(str(tmp_path / "ckpt" / part))
        assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), part
    assert load_generator(str(tmp_path / "ckpt"), device="cpu").info["train_state"]["complete"] is True
    assert not (tmp_path / "ckpt" / "train_state").exists()


def test_init_from_starts_the_unet_from_a_trained_one_with_zero_spatial_input_channels(tmp_path):
    import torch
    from diffusers import UNet2DConditionModel

    from engine.recon.demo_generator import build_unet
    from engine.recon.demo_training import _init_unet_from

    images, emb, recipe, cfg = _tiny_build(3, unet_steps=1)
    drive(train_demo_generator(tmp_path / "plain", recipe, cfg, images=images, embeddings=emb))
    unet = build_unet(dataclasses.replace(cfg, spatial_channels=2))
    _init_unet_from(unet, tmp_path / "plain")
    src = UNet2DConditionModel.from_pretrained(tmp_path / "plain" / "unet").state_dict()
    w = unet.state_dict()["conv_in.weight"]
    assert torch.equal(w[:, :4], src["conv_in.weight"]) and not w[:, 4:].any()
    assert torch.equal(unet.state_dict()["conv_out.weight"], src["conv_out.weight"])


def test_a_reused_vae_keeps_its_encoder_and_gets_its_decoder_fine_tuned(tmp_path):
    """The latent space the UNet was trained in stays put: only the decoder learns from whole images."""
    from safetensors.torch import load_file

    images, emb, recipe, cfg = _tiny_build(4, unet_steps=1)
    drive(train_demo_generator(tmp_path / "first", dataclasses.replace(recipe, vae_decoder_steps=0), cfg,
                               images=images, embeddings=emb))
    events = []
    drive(train_demo_generator(tmp_path / "next", recipe, cfg, images=images, embeddings=emb,
                               init_from=tmp_path / "first"), events.append)
    vae = "vae/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tmp_path / "first" / vae)), load_file(str(tmp_path / "next" / vae))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a if k.startswith(("encoder.", "quant_conv.")))
    assert not all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a if k.startswith("decoder."))
    assert [e.step for e in events if isinstance(e, Progress)][0] == 3  # the VAE's 2 steps are skipped, not redone
    assert "_name_or_path" not in (tmp_path / "next" / "vae" / "config.json").read_text()  # no build-machine path


def test_a_learning_rate_restart_applies_to_cycles_not_yet_begun(tmp_path):
    from engine.errors import CheckpointError

    base = DemoTrainConfig()
    restarted = dataclasses.replace(base, unet_cycles=8, lr_restart_cycle=4)
    assert [base.cycle_peak_lr(c) for c in range(6)] == [base.unet_lr * 0.5 ** c for c in range(6)]
    assert [restarted.cycle_peak_lr(c) / base.unet_lr for c in range(8)] == [1, .5, .25, .125, 1, .5, .25, .125]
    periodic = dataclasses.replace(restarted, unet_cycles=12, lr_restart_every=4)
    assert [periodic.cycle_peak_lr(c) / base.unet_lr for c in range(12)] == [1, .5, .25, .125] * 3

    images, emb, one, cfg = _tiny_build(2, unet_steps=2)
    kw = dict(images=images, embeddings=emb, embedder_identity="test")
    drive(train_demo_generator(tmp_path / "one", one, cfg, **kw))  # 1 cycle done, no restart in its recipe
    more = dataclasses.replace(one, unet_cycles=3, lr_restart_cycle=1)
    drive(train_demo_generator(tmp_path / "more", more, cfg, continue_from=tmp_path / "one", **kw))
    assert load_generator(str(tmp_path / "more"), device="cpu").info["recipe"]["lr_restart_cycle"] == 1
    with pytest.raises(CheckpointError, match="lr_restart_cycle"):  # cycle 2 was trained without that restart
        drive(train_demo_generator(tmp_path / "x", dataclasses.replace(more, unet_cycles=4, lr_restart_cycle=2),
                                   cfg, continue_from=tmp_path / "more", **kw))
    # Periodic restarts that leave the 3 begun cycles' rates as they were (1, 1, .5) are allowed; others are not.
    again = dataclasses.replace(more, unet_cycles=4, lr_restart_every=2)
    drive(train_demo_generator(tmp_path / "again", again, cfg, continue_from=tmp_path / "more", **kw))
    assert load_generator(str(tmp_path / "again"), device="cpu").info["recipe"]["lr_restart_every"] == 2
    with pytest.raises(CheckpointError, match="lr_restart_every"):  # cycle 3 would have restarted at the base rate
        drive(train_demo_generator(tmp_path / "y", dataclasses.replace(more, unet_cycles=4, lr_restart_every=1),
                                   cfg, continue_from=tmp_path / "more", **kw))


def test_the_32px_latent_architecture_builds_and_samples_through_the_real_paths(tmp_path):
    import torch

    from engine.errors import CheckpointError, ConfigError
    from engine.recon.demo_generator import DEMO_ARCHITECTURE, demo_architecture
    from engine.recon.sampler import SamplerConfig, sample_latents

    assert demo_architecture() == DEMO_ARCHITECTURE and DEMO_ARCHITECTURE.latent_size == 16
    cfg = demo_architecture(32)
    assert cfg.latent_size == 32 and cfg.spatial_shape == (4, 32, 32)
    with pytest.raises(ConfigError, match="latent_size"):
        demo_architecture(8)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    emb = rng.standard_normal((8, cfg.embed_dim)).astype(np.float32)
    _, _, recipe, _ = _tiny_build(0, unet_steps=1)
    drive(train_demo_generator(tmp_path / "g32", recipe, cfg, images=images, embeddings=emb, embedder_identity="t"))
    gen = load_generator(str(tmp_path / "g32"), device="cpu")
    assert gen.latent_size == 32 and tuple(gen.encode(images[:2]).shape) == (2, 4, 32, 32)
    with torch.no_grad():
        cond = gen.adapter(torch.from_numpy(emb[:1]))
        lat = sample_latents(gen, cond, gen.adapter.null_condition(1), SamplerConfig(steps=2))
    assert cond.spatial.shape == (1, 4, 32, 32) and gen.decode(lat).shape == (1, 64, 64, 3)
    # Resumed without --latent-size, the build script takes the folder's architecture; asked for another, the keys
    # that differ are named (its UNet has one level more, too).
    script = _build_script()
    assert script.build_architecture(None, tmp_path / "g32") == cfg
    assert script.build_architecture(None, None) == DEMO_ARCHITECTURE == script.build_architecture(16, tmp_path / "g32")
    with pytest.raises(CheckpointError, match=r"architecture \(keys \['attention_levels', 'unet_channels', 'vae_ch"):
        drive(train_demo_generator(tmp_path / "g16", dataclasses.replace(recipe, unet_cycles=2), demo_architecture(),
                                   images=images, embeddings=emb, embedder_identity="t",
                                   continue_from=tmp_path / "g32"))


def test_offset_noise_applies_to_cycles_not_yet_begun_and_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    from engine.errors import CheckpointError

    offset = dataclasses.replace(DemoTrainConfig(), offset_noise=0.1, offset_noise_cycle=1)
    assert [offset.cycle_offset_noise(c) for c in range(3)] == [0.0, 0.1, 0.1]
    images, emb, one, cfg = _tiny_build(5, unet_steps=2)
    kw = dict(images=images, embeddings=emb, embedder_identity="test")
    drive(train_demo_generator(tmp_path / "one", one, cfg, **kw))  # cycle 1 of 1, built before offset noise existed
    two = dataclasses.replace(one, unet_cycles=2, offset_noise=0.1, offset_noise_cycle=1)
    drive(train_demo_generator(tmp_path / "continued", two, cfg, continue_from=tmp_path / "one", **kw))
    drive(train_demo_generator(tmp_path / "straight", two, cfg, **kw))
    drive(train_demo_generator(tmp_path / "plain", dataclasses.replace(one, unet_cycles=2), cfg,
                               continue_from=tmp_path / "one", **kw))
    unet = "unet/diffusion_pytorch_model.safetensors"
    a, b, c = (load_file(str(tmp_path / name / unet)) for name in ("continued", "straight", "plain"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # the same as built in one go
    assert not all(np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)  # and the offset noise did something
    with pytest.raises(CheckpointError, match="offset_noise"):  # cycle 2 was trained with it
        drive(train_demo_generator(tmp_path / "x", dataclasses.replace(two, unet_cycles=3, offset_noise=0.2), cfg,
                                   continue_from=tmp_path / "continued", **kw))


def test_a_checkpoint_at_a_cycle_end_finishes_as_the_build_of_that_many_cycles(tmp_path):
    from safetensors.torch import load_file

    from engine.errors import CheckpointError
    script = _build_script()
    images, emb, one, cfg = _tiny_build(6, unet_steps=2)
    kw = dict(images=images, embeddings=emb, embedder_identity="test")
    three = dataclasses.replace(one, unet_cycles=3)
    _stopped_build(tmp_path / "ckpt", three, cfg, kw, checkpoint_every=1, stop_after="UNet cycle 2 of 3 done")
    assert script.main(["--finish", str(tmp_path / "ckpt"), "--out", str(tmp_path / "done")]) == 0
    drive(train_demo_generator(tmp_path / "two", dataclasses.replace(one, unet_cycles=2), cfg, **kw))
    unet = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tmp_path / "done" / unet)), load_file(str(tmp_path / "two" / unet))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    info = load_generator(str(tmp_path / "done"), device="cpu").info
    assert info["recipe"]["unet_cycles"] == 2 and info["train_state"] == {"cycle": 2, "step": 0, "complete": True}
    assert not (tmp_path / "done" / "train_state").exists()
    drive(train_demo_generator(tmp_path / "more", three, cfg, continue_from=tmp_path / "done", **kw))  # goes on
    with pytest.raises(CheckpointError, match="key 'train_state': expected a checkpoint at the end of a UNet cycle"):
        script.main(["--finish", str(tmp_path / "done"), "--out", str(tmp_path / "again")])


def test_the_build_scripts_shipped_recipe_is_the_one_the_shipped_generator_records():
    from engine.resources import resource_path

    script = _build_script()
    info = json.loads((resource_path("models", "demo-generator") / "generator.json").read_text())
    args = script.parse_args(["--shipped", "--out", "x"])
    assert dataclasses.asdict(script.build_recipe(args)) == info["recipe"]
    arch = dataclasses.asdict(script.build_architecture(args.latent_size, None))
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()} == info["config"]
    assert info["train_state"] == {"complete": True, "cycle": args.unet_cycles, "step": 0}
    # A flag given beside --shipped wins; without --shipped the 16 x 16 recipe of builds 2-6 is the default.
    assert script.build_recipe(script.parse_args(["--shipped", "--unet-cycles", "12"])).unet_cycles == 12
    assert script.parse_args(["--ship"]).latent_size == 32  # argparse's abbreviation reaches the recipe too
    plain = script.parse_args([])
    assert plain.latent_size is None and script.build_recipe(plain) == DemoTrainConfig()
