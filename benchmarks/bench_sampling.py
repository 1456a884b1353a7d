"""Sampling speed: NeuroLens's sampling loop vs a plain diffusers pipeline call, same UNet and scheduler, same run.

CPU section: the shipped demo generator, one 25-step reconstruction of one image with classifier-free guidance
(adapter → denoise → decode), the median of ``--repeats`` runs; then the same sampling through diffusers'
``StableDiffusionPipeline`` (text encoder replaced by ``prompt_embeds`` = our condition tokens and
``negative_prompt_embeds`` = the learned null tokens, the same DDIM scheduler config and starting noise), and the
largest pixel difference between the two outputs (they compute the same thing).

GPU section (only where CUDA is present): an SD-1.5-sized UNet built from its config (random weights, bf16, SDPA) at
256² and 512², batch 1 and 16, 20 DDIM steps with CFG and one VAE decode: images/s and the fraction of the dense bf16
peak given by the FLOP counts in the reference (UNet 180 / 803 GFLOP per forward at 256² / 512², VAE decoder 622 /
2,515), against a default diffusers pipeline call on the same machine. Without a GPU it reports "no GPU here".

Prints one JSON object and writes it to ``benchmarks/results/bench_sampling.json``.

    python benchmarks/bench_sampling.py [--repeats 5] [--threads 2] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import report  # noqa: E402 - needs the path above

STEPS, GUIDANCE = 25, 3.0
GFLOP_UNET = {256: 180.0, 512: 803.0}
GFLOP_VAE_DEC = {256: 622.0, 512: 2515.0}


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def cpu_section(repeats: int, spec: str = "demo") -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    from engine.recon.generators import load_generator
    from engine.recon.sampler import SamplerConfig, initial_noise, make_scheduler, sample_latents

    gen = load_generator(spec, device="cpu")
    emb = torch.from_numpy(np.random.default_rng(0).standard_normal((1, gen.adapter.config.input_shape[0]))
                           .astype(np.float32))
    cfg = SamplerConfig(sampler="ddim", steps=STEPS, guidance=GUIDANCE, seed=0)

    def ours():
        with torch.no_grad():
            cond, null = gen.adapter(emb), gen.adapter.null_condition(1)
            return gen.decode(sample_latents(gen, cond, null, cfg, seeds=[0]))

    ours()  # warm-up
    t_ours, img_ours = _median_time(ours, repeats)

    pipe = StableDiffusionPipeline(vae=gen.vae, text_encoder=None, tokenizer=None, unet=gen.unet,
                                   scheduler=make_scheduler(gen.scheduler_config, "ddim"), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    shape = (gen.latent_channels, gen.latent_size, gen.latent_size)

    def plain():
        with torch.no_grad():
            cond, null = gen.adapter(emb), gen.adapter.null_condition(1)
            out = pipe(prompt_embeds=cond.tokens, negative_prompt_embeds=null.tokens, guidance_scale=GUIDANCE,
                       num_inference_steps=STEPS, height=gen.image_size, width=gen.image_size,
                       latents=initial_noise(shape, [0]), output_type="np")
        return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)

    plain()
    t_plain, img_plain = _median_time(plain, repeats)
    return {"generator": spec, "image_size": gen.image_size, "steps": STEPS, "guidance": GUIDANCE,
            "sampler": "ddim", "threads": torch.get_num_threads(),
            "neurolens_s_per_image": round(t_ours, 4), "diffusers_pipeline_s_per_image": round(t_plain, 4),
            "overhead_ratio": round(t_ours / t_plain, 3), "goal_s": 2.0, "meets_goal": t_ours < 2.0,
            "max_pixel_diff_vs_pipeline": int(np.abs(img_ours.astype(int) - img_plain.astype(int)).max())}


def gpu_section(peak_tflops: float, repeats: int) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"status": "no GPU here"}
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from engine.recon.conditioning import Condition
    from engine.recon.generators import Generator, _finish, GeneratorConfig
    from engine.recon.sampler import SamplerConfig, sample_latents

    dev, dtype = torch.device("cuda"), torch.bfloat16
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        scaling_factor=0.18215)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    results = []
    steps = 20
    for size in (256, 512):
        gen = _finish(Generator(kind="sd15", path="sd15-config", unet=unet, vae=vae,
                                scheduler_config=dict(sched.config), image_size=size, context_dim=768, n_tokens=77,
                                device=dev, dtype=dtype), GeneratorConfig(spec="sd15-config", device="cuda"))
        for batch in (1, 16):
            cond = Condition(torch.randn(batch, 77, 768, device=dev, dtype=dtype))
            null = Condition(torch.zeros(batch, 77, 768, device=dev, dtype=dtype))
            cfg = SamplerConfig(steps=steps, guidance=5.0)

            def ours():
                out = gen.decode(sample_latents(gen, cond, null, cfg), batch_size=batch)
                torch.cuda.synchronize()
                return out

            ours()
            t, _ = _median_time(ours, repeats)
            flop = batch * (2 * steps * GFLOP_UNET[size] + GFLOP_VAE_DEC[size]) * 1e9
            pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched,
                                           safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)

            def plain():
                out = pipe(prompt_embeds=cond.tokens, negative_prompt_embeds=null.tokens, guidance_scale=5.0,
                           num_inference_steps=steps, height=size, width=size, output_type="latent")
                vae.decode(out.images / vae.config.scaling_factor)
                torch.cuda.synchronize()

            plain()
            tp, _ = _median_time(plain, repeats)
            results.append({"size": size, "batch": batch, "img_per_s": round(batch / t, 3),
                            "fraction_of_peak": round(flop / t / (peak_tflops * 1e12), 4),
                            "diffusers_img_per_s": round(batch / tp, 3), "speedup_vs_diffusers": round(tp / t, 3)})
    return {"status": "ok", "device": torch.cuda.get_device_name(0), "dtype": "bf16", "steps": steps,
            "peak_tflops": peak_tflops, "results": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--generator", default="demo", help="'demo' (shipped) or a demo-layout generator folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
               "python": platform.python_version(), "torch": torch.__version__}
    result = {"benchmark": "bench_sampling", "machine": machine,
              "cpu": cpu_section(args.repeats, args.generator), "gpu": gpu_section(args.peak_tflops, args.repeats)}
    report(result, "bench_sampling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
