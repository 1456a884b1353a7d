"""Sampling speed: NeuroLens's sampling loop vs a plain diffusers pipeline call, same UNet and scheduler, same run.

CPU section: the shipped demo generator, one 25-step reconstruction of one image with classifier-free guidance
(adapter → denoise → decode), the median of ``--repeats`` runs; then the same sampling through diffusers'
``StableDiffusionPipeline`` (text encoder replaced by ``prompt_embeds`` = our condition tokens and
``negative_prompt_embeds`` = the learned null tokens, the same DDIM scheduler config and starting noise), and the
largest pixel difference between the two outputs (they compute the same thing).

CPU batching: the same 32 guided samples denoised in batches of 1, 8 and 32 (``reconstruct``'s batching).

GPU section (only where CUDA is present): an SD-1.5-sized UNet and VAE built from their configs (random weights,
bf16), 20 DDIM steps with CFG and the VAE decode, at 256² and 512², batch 1 and 16: a default diffusers
``StableDiffusionPipeline`` (its own copy of the weights, diffusers' defaults) against NeuroLens's path (both CFG
halves in one UNet batch, fused SDPA attention, channels-last weights and inputs, no host sync inside the loop, bf16
VAE decode in memory-sized slices) and, with ``--compile MODE``, the same with ``torch.compile`` of the UNet
(``reduce-overhead`` replays CUDA graphs; the first call, which compiles, is reported apart). Reports images/s, the
fraction of the dense bf16 peak given by the FLOP counts in the reference (UNet 180 / 803 GFLOP per forward at
256² / 512², VAE decoder 622 / 2,515), the speed-up over the pipeline and the pixel difference to the pipeline's
images from the same starting noise (bf16 tolerance). Without a GPU it reports "no GPU here".

Prints one JSON object and writes it to ``benchmarks/results/bench_sampling.json``.

    python benchmarks/bench_sampling.py [--repeats 5] [--threads 2] [--peak-tflops 989] [--quick] [--device cpu]
                                        [--compile reduce-overhead] [--compile-configs 256x1,512x16]
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
            hook = None
            if cond.spatial is not None:
                # The demo generator's spatial condition rides along the latents' channels; the pipeline knows no such
                # input, so its UNet's first convolution gets it appended, in the pipeline's CFG order [null; cond].
                spatial = torch.cat([null.spatial, cond.spatial])
                hook = gen.unet.conv_in.register_forward_pre_hook(
                    lambda _module, args: (torch.cat([args[0], spatial.to(args[0])], dim=1),))
            try:
                out = pipe(prompt_embeds=cond.tokens, negative_prompt_embeds=null.tokens, guidance_scale=GUIDANCE,
                           num_inference_steps=STEPS, height=gen.image_size, width=gen.image_size,
                           latents=initial_noise(shape, [0]), output_type="np")
            finally:
                if hook is not None:
                    hook.remove()
        return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)

    plain()
    t_plain, img_plain = _median_time(plain, repeats)
    return {"generator": spec, "image_size": gen.image_size, "steps": STEPS, "guidance": GUIDANCE,
            "sampler": "ddim", "threads": torch.get_num_threads(),
            "neurolens_s_per_image": round(t_ours, 4), "diffusers_pipeline_s_per_image": round(t_plain, 4),
            "overhead_ratio": round(t_ours / t_plain, 3), "goal_s": 2.0, "meets_goal": t_ours < 2.0,
            "max_pixel_diff_vs_pipeline": int(np.abs(img_ours.astype(int) - img_plain.astype(int)).max())}


def cpu_batching(repeats: int, spec: str = "demo", n_samples: int = 32, steps: int = 10) -> dict:
    """``reconstruct``'s batching on the CPU: the same ``n_samples`` guided samples denoised and decoded in batches of
    1, 8 and ``n_samples`` (seconds per sample; the default batch on the CPU is ``reconstruct.sampling_batch``)."""
    import torch

    from engine.recon.generators import load_generator
    from engine.recon.sampler import SamplerConfig, sample_latents

    gen = load_generator(spec, device="cpu")
    emb = torch.from_numpy(np.random.default_rng(1).standard_normal((n_samples, gen.adapter.config.input_shape[0]))
                           .astype(np.float32))
    cfg = SamplerConfig(sampler="ddim", steps=steps, guidance=GUIDANCE, seed=0)
    out = {}
    for batch in (1, 8, n_samples):
        def run():
            with torch.no_grad():
                for s in range(0, n_samples, batch):
                    cond = gen.adapter(emb[s:s + batch])
                    null = gen.adapter.null_condition(cond.batch)
                    gen.decode(sample_latents(gen, cond, null, cfg, seeds=list(range(s, s + cond.batch))))
        run()
        t, _ = _median_time(run, repeats)
        out[f"batch_{batch}_s_per_sample"] = round(t / n_samples, 4)
    out["speedup_8_vs_1"] = round(out["batch_1_s_per_sample"] / out["batch_8_s_per_sample"], 2)
    out[f"speedup_{n_samples}_vs_8"] = round(out["batch_8_s_per_sample"] / out[f"batch_{n_samples}_s_per_sample"], 2)
    return {"generator": spec, "samples": n_samples, "steps": steps, **out}


def sd15_parts():
    """An SD-1.5-sized UNet (860 M parameters) and VAE from their configs (random weights) and SD's DDIM schedule."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        scaling_factor=0.18215)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return unet, vae, sched


def _pixels_of(x) -> np.ndarray:
    """A pipeline's ``output_type="pt"`` images (N, 3, H, W) in [0, 1] → uint8 (N, H, W, 3)."""
    return (x.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def gpu_section(peak_tflops: float, repeats: int, configs=((256, 1), (512, 16), (256, 16), (512, 1)),
                compile_mode: str | None = None, compile_configs=((256, 1),), steps: int = 20,
                eager: bool = True) -> dict:
    """SD-1.5-size sampling in bf16 with CFG, side by side in one process (see the module docstring)."""
    import copy

    import torch

    if not torch.cuda.is_available():
        return {"status": "no GPU here"}
    from diffusers import StableDiffusionPipeline

    from engine.recon.conditioning import Condition
    from engine.recon.generator import Generator, finish_loading
    from engine.recon.generators import GeneratorConfig
    from engine.recon.sampler import SamplerConfig, initial_noise, sample_latents

    dev, dtype = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    with dev:  # random initialisation on the GPU (the CPU takes tens of seconds for 860 M parameters)
        unet, vae, sched = sd15_parts()
    # The default pipeline gets its own copy in diffusers' default layout; ours is converted by finish_loading.
    pipe = StableDiffusionPipeline(vae=copy.deepcopy(vae), text_encoder=None, tokenizer=None,
                                   unet=copy.deepcopy(unet), scheduler=sched, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False).to(dev, dtype)
    pipe.set_progress_bar_config(disable=True)
    results = []
    for size, batch in configs:
        variants = [("neurolens", False)] if eager else []
        if compile_mode and (size, batch) in compile_configs:
            variants.append((f"neurolens+compile:{compile_mode}", compile_mode))
        cond = Condition(torch.randn(batch, 77, 768, device=dev, dtype=dtype))
        null = Condition(torch.randn(batch, 77, 768, device=dev, dtype=dtype) * 0.1)
        cfg = SamplerConfig(steps=steps, guidance=5.0)
        seeds = list(range(batch))
        flop = batch * (2 * steps * GFLOP_UNET[size] + GFLOP_VAE_DEC[size]) * 1e9
        row = {"size": size, "batch": batch, "steps": steps}

        def plain():
            out = pipe(prompt_embeds=cond.tokens, negative_prompt_embeds=null.tokens, guidance_scale=5.0,
                       num_inference_steps=steps, height=size, width=size, output_type="pt",
                       latents=initial_noise((4, size // 8, size // 8), seeds, device=dev, dtype=dtype))
            torch.cuda.synchronize()
            return _pixels_of(out.images)

        plain()
        tp, img_plain = _median_time(plain, repeats)
        row["diffusers_img_per_s"] = round(batch / tp, 3)
        row["diffusers_fraction_of_peak"] = round(flop / tp / (peak_tflops * 1e12), 4)
        for name, mode in variants:
            gen = finish_loading(Generator(kind="sd15", path="sd15-config", unet=unet, vae=vae,
                                    scheduler_config=dict(sched.config), image_size=size, context_dim=768,
                                    n_tokens=77, device=dev, dtype=dtype),
                          GeneratorConfig(spec="sd15-config", device="cuda", compile=mode))

            def ours():
                out = gen.decode(sample_latents(gen, cond, null, cfg, seeds=seeds))
                torch.cuda.synchronize()
                return out

            t0 = time.perf_counter()
            ours()  # warm-up (compiles when ``mode`` is set)
            first = time.perf_counter() - t0
            t, img = _median_time(ours, repeats)
            diff = np.abs(img.astype(np.int16) - img_plain.astype(np.int16))
            row[name] = {"img_per_s": round(batch / t, 3), "fraction_of_peak": round(flop / t / (peak_tflops * 1e12), 4),
                         "speedup_vs_diffusers": round(tp / t, 3), "first_call_s": round(first, 1),
                         "mean_abs_pixel_diff_vs_diffusers": round(float(diff.mean()), 3),
                         "max_abs_pixel_diff_vs_diffusers": int(diff.max())}
        results.append(row)
        torch.cuda.empty_cache()
    return {"status": "ok", "device": torch.cuda.get_device_name(0), "dtype": "bf16", "steps": steps,
            "peak_tflops": peak_tflops, "max_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1),
            "goals": {"512x16": ">= 40% of peak and >= 1.5x diffusers", "256x1": ">= 3x diffusers"},
            "results": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--generator", default="demo", help="'demo' (shipped) or a demo-layout generator folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM / H200: 989)")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu: skip the GPU section")
    p.add_argument("--quick", action="store_true", help="1 repeat, the two goal configurations only")
    p.add_argument("--compile", default=None, metavar="MODE",
                   help="also time torch.compile(MODE) of the UNet (e.g. reduce-overhead: CUDA graphs)")
    p.add_argument("--compile-configs", default="256x1", help="SIZExBATCH,... for --compile (default 256x1)")
    p.add_argument("--configs", default=None, help="SIZExBATCH,... of the GPU section (default: all four; "
                                                   "--quick: 256x1,512x16)")
    p.add_argument("--skip-cpu", action="store_true", help="skip the CPU sections (a GPU run)")
    p.add_argument("--compile-only", action="store_true", help="with --compile: time only the compiled variant "
                                                               "beside the pipeline")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    machine = {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
               "python": platform.python_version(), "torch": torch.__version__}
    def parse(text: str) -> tuple:
        return tuple(tuple(int(v) for v in c.split("x")) for c in text.split(",") if c)

    configs = parse(args.configs or ("256x1,512x16" if args.quick else "256x1,512x16,256x16,512x1"))
    compile_configs = parse(args.compile_configs)
    skipped = {"status": "skipped (--skip-cpu)"}
    result = {"benchmark": "bench_sampling", "machine": machine,
              "cpu": skipped if args.skip_cpu else cpu_section(repeats, args.generator),
              "cpu_batching": skipped if args.skip_cpu else cpu_batching(repeats, args.generator),
              "gpu": ({"status": "skipped (--device cpu)"} if args.device == "cpu" else
                      gpu_section(args.peak_tflops, repeats, configs, args.compile, compile_configs,
                                  eager=not args.compile_only))}
    report(result, "bench_sampling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
