import pytest
import torch

from engine.errors import Cancelled, ConfigError
from engine.events import CancelToken
from engine.recon.generators import load_generator
from engine.recon.sampler import SamplerConfig, denoise, sample_latents


@pytest.fixture(scope="module")
def gen(tiny_demo_gen):
    return load_generator(str(tiny_demo_gen), device="cpu")


def _cond(gen, n, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        return gen.adapter(torch.randn(n, 64)), gen.adapter.null_condition(n)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_an_item_gets_the_same_sample_alone_or_in_a_batch(gen, sampler):
    cond, null = _cond(gen, 3)
    cfg = SamplerConfig(sampler=sampler, steps=3, guidance=3.0)
    both = sample_latents(gen, cond, null, cfg, seeds=[7, 8, 9])
    one = sample_latents(gen, cond.__class__(cond.tokens[1:2]), gen.adapter.null_condition(1), cfg, seeds=[8])
    assert both.shape == (3, 4, gen.latent_size, gen.latent_size)
    assert torch.allclose(both[1:2], one, atol=1e-4)


def test_guidance_zero_ignores_the_condition_and_one_step_state_per_step(gen):
    c1, null = _cond(gen, 1, seed=0)
    c2, _ = _cond(gen, 1, seed=1)
    cfg = SamplerConfig(steps=4, guidance=0.0)
    states = []
    a = sample_latents(gen, c1, null, cfg, seeds=[0], callback=states.append)
    b = sample_latents(gen, c2, null, cfg, seeds=[0])
    assert torch.allclose(a, b)
    assert [s.step for s in states] == [1, 2, 3, 4] and states[-1].x0.shape == a.shape
    g = sample_latents(gen, c1, null, SamplerConfig(steps=4, guidance=3.0), seeds=[0])
    assert not torch.allclose(a, g)


def test_img2img_runs_only_the_last_share_of_the_schedule(gen):
    cond, null = _cond(gen, 2)
    init = torch.zeros(2, 4, gen.latent_size, gen.latent_size)
    states = []
    sample_latents(gen, cond, null, SamplerConfig(steps=10, guidance=2.0, strength=0.3), init_latents=init,
                   callback=states.append)
    assert len(states) == 3
    # At 1.0 the whole schedule runs from the init noised to its first step: the init still shows through.
    whole = [sample_latents(gen, cond, null, SamplerConfig(steps=4, strength=1.0), init_latents=init + shift,
                            callback=states.append) for shift in (0.0, 3.0)]
    assert len(states) == 3 + 8 and not torch.allclose(whole[0], whole[1])


def test_cancel_stops_between_steps(gen):
    cond, null = _cond(gen, 1)
    token = CancelToken()
    loop = denoise(gen, cond, null, SamplerConfig(steps=5), cancel=token)
    next(loop)
    token.set()
    with pytest.raises(Cancelled):
        next(loop)


def test_sampler_settings_are_checked():
    with pytest.raises(ConfigError, match="sampler"):
        SamplerConfig(sampler="euler")
    with pytest.raises(ConfigError, match="steps"):
        SamplerConfig(steps=0)
    with pytest.raises(ConfigError, match="strength"):
        SamplerConfig(strength=1.5)


def test_dpm_solver_timesteps_are_set_without_a_deprecation_warning(gen):
    """diffusers' DPM-Solver reads its schedule with np.array(torch tensor), which numpy 2 flags; ``set_timesteps``
    gives it the same float32 values as numpy: same timesteps and sigmas, no warning, the tensor restored."""
    import warnings

    import numpy as np

    from engine.recon.sampler import make_scheduler, set_timesteps

    plain = make_scheduler(gen.scheduler_config, "dpmpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain.set_timesteps(12, device="cpu")
    ours = make_scheduler(gen.scheduler_config, "dpmpp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        set_timesteps(ours, 12, "cpu")
    assert torch.equal(ours.timesteps, plain.timesteps)
    assert np.allclose(ours.sigmas.numpy(), plain.sigmas.numpy())
    assert isinstance(ours.alphas_cumprod, torch.Tensor)


def test_the_fast_path_gives_a_plain_diffusers_pipelines_images(tiny_demo_gen, sampler="ddim"):
    """Both guidance halves in one UNet batch, channels-last weights and inputs, no host syncs in the loop, sliced VAE
    decode: in float32 the images equal those of a default diffusers pipeline (separate layout, its own loop)."""
    import numpy as np
    from diffusers import StableDiffusionPipeline

    from engine.recon.generators import GeneratorConfig
    from engine.recon.sampler import initial_noise, make_scheduler

    fast = load_generator(GeneratorConfig(spec=str(tiny_demo_gen), device="cpu", channels_last=True))
    plain = load_generator(GeneratorConfig(spec=str(tiny_demo_gen), device="cpu", channels_last=False))
    assert fast.info["channels_last"] and fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    cond, null = _cond(fast, 3)
    cfg = SamplerConfig(sampler=sampler, steps=5, guidance=3.0)
    seeds = [11, 12, 13]
    ours = fast.decode(sample_latents(fast, cond, null, cfg, seeds=seeds), batch_size=2)
    pipe = StableDiffusionPipeline(vae=plain.vae, text_encoder=None, tokenizer=None, unet=plain.unet,
                                   scheduler=make_scheduler(plain.scheduler_config, sampler), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    shape = (plain.latent_channels, plain.latent_size, plain.latent_size)
    with torch.no_grad():
        out = pipe(prompt_embeds=cond.tokens, negative_prompt_embeds=null.tokens, guidance_scale=3.0,
                   num_inference_steps=5, height=plain.image_size, width=plain.image_size,
                   latents=initial_noise(shape, seeds), output_type="np")
    reference = (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)
    assert ours.shape == reference.shape == (3, plain.image_size, plain.image_size, 3)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_channels_last_changes_no_sample(tiny_demo_gen):
    from engine.recon.generators import GeneratorConfig

    latents = {}
    for layout in (True, False):
        g = load_generator(GeneratorConfig(spec=str(tiny_demo_gen), device="cpu", channels_last=layout))
        cond, null = _cond(g, 2)
        latents[layout] = sample_latents(g, cond, null, SamplerConfig(sampler="dpmpp", steps=4), seeds=[1, 2])
    assert torch.allclose(latents[True], latents[False], atol=1e-4)


def test_compile_modes_are_checked(tiny_demo_gen):
    from engine.recon.generators import GeneratorConfig

    with pytest.raises(ConfigError, match="reduce-overhead"):
        load_generator(GeneratorConfig(spec=str(tiny_demo_gen), device="cpu", compile="fastest"))
