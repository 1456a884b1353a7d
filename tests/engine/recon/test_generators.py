import json
import shutil

import numpy as np
import pytest
import torch

from engine.errors import ModelFolderError
from engine.recon.conditioning import ConditioningAdapter
from engine.recon.generators import folder_kind, load_generator
from engine.recon.sampler import SamplerConfig, sample_latents


def _sample(gen, shape=(10,)):
    a = ConditioningAdapter(gen.adapter_config(shape))
    with torch.no_grad():
        cond, null = a(torch.randn(2, *shape)), a.null_condition(2)
    lat = sample_latents(gen, cond, null, SamplerConfig(steps=2, guidance=3.0, sampler="dpmpp"))
    return gen.decode(lat)


def test_tiny_sd15_folder_loads_through_the_user_path_and_samples(tiny_sd15, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert folder_kind(tiny_sd15) == "sd15"
    gen = load_generator(str(tiny_sd15), device="cpu")
    assert (gen.kind, gen.context_dim, gen.n_tokens, gen.pooled_dim, gen.image_size) == ("sd15", 32, 77, None, 32)
    images = _sample(gen)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


def test_tiny_sdxl_folder_loads_with_pooled_and_time_ids(tiny_sdxl):
    gen = load_generator(str(tiny_sdxl), device="cpu")
    assert gen.kind == "sdxl" and gen.pooled_dim == 16
    assert _sample(gen, shape=(4, 10)).shape == (2, 32, 32, 3)
    # The UNet gets tokens, the adapter's pooled vector and the six size/crop ids (original, crop (0, 0), target).
    a = ConditioningAdapter(gen.adapter_config((4, 10)))
    with torch.no_grad():
        cond = a(torch.randn(2, 4, 10))
    kw = gen.unet_inputs(cond)
    assert kw["encoder_hidden_states"].shape == (2, 77, gen.context_dim)
    assert torch.equal(kw["added_cond_kwargs"]["text_embeds"], cond.pooled)
    assert kw["added_cond_kwargs"]["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 2
    x, t = torch.randn(2, gen.latent_channels, gen.latent_size, gen.latent_size), torch.tensor(500)
    with torch.no_grad():
        other = type(cond)(cond.tokens, cond.pooled + 1.0)
        assert not torch.allclose(gen.predict_noise(x, t, cond), gen.predict_noise(x, t, other))


def test_prompt_token_path_appends_brain_tokens_to_the_empty_prompt(tiny_sd15):
    gen = load_generator(str(tiny_sd15), device="cpu", prompt_tokens=True)
    assert gen.base_tokens.shape == (1, 77, 32)
    a = ConditioningAdapter(gen.adapter_config((10,)))
    kwargs = gen.unet_inputs(a(torch.randn(2, 10)))
    assert kwargs["encoder_hidden_states"].shape == (2, 77 + 77, 32)


def test_ip_adapter_in_the_folder_adds_the_image_embedding_path(tiny_sd15, tmp_path):
    from safetensors.torch import load_file, save_file

    from tests.engine.recon.tiny_models import write_tiny_ip_adapter

    folder = tmp_path / "sd15-ip"
    shutil.copytree(tiny_sd15, folder)
    write_tiny_ip_adapter(folder, image_embed_dim=12)
    assert load_generator(str(folder), device="cpu").image_embed_dim is None  # off unless asked for
    gen = load_generator(str(folder), device="cpu", ip_adapter="auto")
    assert gen.image_embed_dim == 12 and gen.info["ip_adapter"].endswith("ip-adapter.safetensors")
    a = ConditioningAdapter(gen.adapter_config((10,)))
    assert a.config.image_embed_dim == 12
    with torch.no_grad():
        cond = a(torch.randn(2, 10))
        assert cond.image_embeds.shape == (2, 12) and a.null_condition(2).image_embeds.shape == (2, 12)
        x, t = torch.randn(2, 4, 16, 16), torch.tensor(500)
        other = type(cond)(cond.tokens, None, cond.image_embeds + 1.0)
        # The image embedding reaches the UNet through the IP-Adapter's decoupled cross-attention.
        assert not torch.allclose(gen.predict_noise(x, t, cond), gen.predict_noise(x, t, other))
    assert _sample(gen).shape == (2, 32, 32, 3)
    # Condition dropout replaces the image embedding with the learned null one as well.
    dropped = a.drop(cond, torch.tensor([True, False]))
    assert torch.equal(dropped.image_embeds[0], a.null.image_embeds) and torch.equal(dropped.image_embeds[1],
                                                                                       cond.image_embeds[1])
    state = load_file(str(folder / "ip_adapter" / "ip-adapter.safetensors"))
    state.pop("ip_adapter.1.to_v_ip.weight")
    save_file(state, str(folder / "ip_adapter" / "bad.safetensors"))
    with pytest.raises(ModelFolderError, match="single ip_adapter"):
        load_generator(str(folder), ip_adapter="auto")
    with pytest.raises(ModelFolderError, match="to_k_ip/to_v_ip"):
        load_generator(str(folder), ip_adapter=str(folder / "ip_adapter" / "bad.safetensors"))


@pytest.mark.parametrize("remove, missing", [
    ("unet", "unet/"), ("vae/config.json", "vae/config.json"), ("model_index.json", "model_index.json"),
    ("scheduler", "scheduler/scheduler_config.json"),
])
def test_incomplete_folders_name_the_missing_part(tiny_sd15, tmp_path, remove, missing):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd15, broken)
    target = broken / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelFolderError, match=f"missing {missing}"):
        load_generator(str(broken))


def test_pickled_weights_are_refused_with_a_hint(tiny_sd15, tmp_path):
    broken = tmp_path / "pickled"
    shutil.copytree(tiny_sd15, broken)
    w = broken / "unet" / "diffusion_pytorch_model.safetensors"
    w.rename(w.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(ModelFolderError, match="pickle"):
        load_generator(str(broken))


def test_weights_that_do_not_match_the_config_are_named(tiny_sd15, tmp_path):
    broken = tmp_path / "mismatch"
    shutil.copytree(tiny_sd15, broken)
    cfg_path = broken / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["in_channels"] = cfg["out_channels"] = 8
    cfg_path.write_text(json.dumps(cfg))
    shutil.copy(tiny_sd15 / "unet" / "diffusion_pytorch_model.safetensors", broken / "unet")
    with pytest.raises(ModelFolderError, match="missing unet/ weights that match unet/config.json"):
        load_generator(str(broken))


def test_missing_folder_and_demo_folder_errors(tmp_path):
    with pytest.raises(ModelFolderError, match="the folder itself"):
        load_generator(str(tmp_path / "nope"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "generator.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="unet/"):
        load_generator(str(tmp_path / "d"))
