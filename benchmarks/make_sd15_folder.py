"""Write a Stable Diffusion 1.5-layout diffusers folder with random weights (no download): for GPU checks and benchmarks.

``--size full`` is SD-1.5's own architecture (UNet 860 M parameters, 512 px, VAE 84 M), saved as safetensors with
``save_pretrained`` exactly as a real SD-1.5 folder is laid out (``model_index.json``, ``unet/``, ``vae/``,
``scheduler/``); ``--size tiny`` the same layout with small channels (for a CPU run of the same path). The images it
generates are noise; the point is the shapes, the memory and the speed of the real thing.

    python benchmarks/make_sd15_folder.py OUT_DIR [--size full|tiny] [--seed 0] [--dtype fp16|fp32|bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SIZES = {
    "full": {"unet": dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                          block_out_channels=(320, 640, 1280, 1280), layers_per_block=2),
             "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512)},
    "tiny": {"unet": dict(sample_size=16, cross_attention_dim=32, attention_head_dim=2, block_out_channels=(16, 32),
                          layers_per_block=1, norm_num_groups=8,
                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
             "vae": dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=32)},
}


def make_sd15_folder(out: str | Path, size: str = "full", seed: int = 0, dtype: str = "fp16") -> Path:
    """Build and save the folder (weights stored in ``dtype``, as SD-1.5 is distributed; initialised on the GPU
    when there is one); returns its path. An existing folder is left as it is."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    out = Path(out)
    if (out / "model_index.json").is_file():
        return out
    spec = SIZES[size]
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        unet = UNet2DConditionModel(**spec["unet"])
        n_vae = len(spec["vae"]["block_out_channels"])
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, scaling_factor=0.18215,
                            down_block_types=("DownEncoderBlock2D",) * n_vae,
                            up_block_types=("UpDecoderBlock2D",) * n_vae, **spec["vae"])
    stored = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    unet, vae = unet.to("cpu", stored), vae.to("cpu", stored)
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                          set_alpha_to_one=False, steps_offset=1)
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    sched.save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "PNDMScheduler"]}, indent=2))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["fp16", "fp32", "bf16"], default="fp16", help="stored precision")
    args = p.parse_args(argv)
    path = make_sd15_folder(args.out, args.size, args.seed, args.dtype)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
