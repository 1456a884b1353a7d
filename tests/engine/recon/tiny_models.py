"""Tiny real-architecture Stable Diffusion 1.5 and SDXL folders, built from configs as diffusers' own tests do."""

from __future__ import annotations

import json
from pathlib import Path


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_tokenizer(folder: Path) -> None:
    """A byte-level CLIP BPE tokenizer with no merges (vocab.json + merges.txt), 514 tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77, "pad_token": "<|endoftext|>"}))


def _text_encoder(hidden: int, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=hidden,
                         intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=514,
                         projection_dim=hidden, max_position_embeddings=77)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=4, sample_size=32)


def _scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                         set_alpha_to_one=False, steps_offset=1)


def build_tiny_sd15(folder: Path) -> Path:
    """An SD-1.5-layout folder (UNet 8/16 channels, context 32, 16×16 latents → 32 px), saved with save_pretrained."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=4)
    write_tiny_tokenizer(folder / "_tok")
    tok = CLIPTokenizer.from_pretrained(folder / "_tok")
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(32), tokenizer=tok, unet=unet,
                                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sdxl(folder: Path) -> Path:
    """An SDXL-layout folder: two text encoders (16 + 16 = context 32), pooled 16 + 6 time ids × 8."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=4, addition_embed_type="text_time",
                                addition_time_embed_dim=8, projection_class_embeddings_input_dim=16 + 6 * 8,
                                transformer_layers_per_block=1)
    write_tiny_tokenizer(folder / "_tok")
    tok = CLIPTokenizer.from_pretrained(folder / "_tok")
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=_text_encoder(16), text_encoder_2=_text_encoder(16, True),
                                     tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=_scheduler())
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def write_tiny_ip_adapter(sd_folder: Path, image_embed_dim: int = 12) -> Path:
    """A plain IP-Adapter for a tiny SD folder, in the original file format (``image_proj.*``: the linear projection to
    4 tokens and its LayerNorm; ``ip_adapter.<1, 3, 5...>.to_k_ip/to_v_ip``: one pair per cross-attention layer, in
    the UNet's processor order), saved as ``<sd_folder>/ip_adapter/ip-adapter.safetensors``."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    ctx, channels = unet.config.cross_attention_dim, unet.config.block_out_channels
    g = torch.Generator().manual_seed(1)
    state = {"image_proj.proj.weight": torch.randn(4 * ctx, image_embed_dim, generator=g) * 0.2,
             "image_proj.proj.bias": torch.zeros(4 * ctx), "image_proj.norm.weight": torch.ones(ctx),
             "image_proj.norm.bias": torch.zeros(ctx)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = int(name.split(".")[1]) if not name.startswith("mid_block") else -1
        hidden = (channels[-1] if block < 0 else
                  list(reversed(channels))[block] if name.startswith("up_blocks") else channels[block])
        for proj in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key}.{proj}.weight"] = torch.randn(hidden, ctx, generator=g) * 0.2
        key += 2
    (sd_folder / "ip_adapter").mkdir(exist_ok=True)
    path = sd_folder / "ip_adapter" / "ip-adapter.safetensors"
    save_file(state, str(path))
    return path


TINY_DEMO = dict(image_size=32, vae_channels=(8, 16), unet_channels=(16, 32), attention_levels=(False, True),
                 context_dim=16, n_tokens=2, attention_head_dim=8)


def build_tiny_demo_generator(folder: Path, embed_dim: int = 64, embedder: str = "pixels", **architecture) -> Path:
    """An untrained generator in the demo layout (VAE + UNet + adapter), reading ``embed_dim``-d embeddings;
    ``architecture``: other ``DemoGeneratorConfig`` fields (e.g. the spatial condition)."""
    import torch

    from engine.recon.demo_generator import (DemoGeneratorConfig, build_adapter, build_scheduler, build_unet,
                                             build_vae, save_demo_generator)

    torch.manual_seed(0)
    cfg = DemoGeneratorConfig(embed_dim=embed_dim, **{**TINY_DEMO, **architecture})
    path = save_demo_generator(folder, vae=build_vae(cfg), unet=build_unet(cfg), adapter=build_adapter(cfg),
                               scheduler=build_scheduler(), cfg=cfg)
    manifest = json.loads((path / "generator.json").read_text())
    manifest["embedder"] = embedder
    (path / "generator.json").write_text(json.dumps(manifest))
    return path
