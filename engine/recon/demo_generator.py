"""The demo generator: a small latent diffusion model for the 64×64 demo stimuli, sized to train and sample on a CPU.

Parts (diffusers classes, so the demo runs through exactly the code real generators use), as shipped
(build 7, ``demo_architecture(32)``; builds 2-6 had ``DEMO_ARCHITECTURE``'s 16×16 latent):

- VAE: ``AutoencoderKL`` 64×64×3 → 32×32×4 (one downsampling, no attention), latents scaled to unit variance;
- UNet: ``UNet2DConditionModel`` on 32×32 latents, channels 32/32/64/64, attention only at 8×8 and 4×4
  (self-attention at 16×16 costs most of a CPU step for little gain on these images), cross-attention on 4 tokens of
  width 64, the same tokens also pooled into the timestep embedding (``global_condition``);
- conditioning: a ``ConditioningAdapter`` from the demo image embedder's pooled 128-d vector to those tokens, with
  the learned null condition, and a spatial condition: a 4×32×32 map predicted from the same vector (trained to be
  the clean latent) and concatenated to the noisy latents, as InstructPix2Pix concatenates its image; its null is
  zeros. Without it the UNet must learn where the object is from tokens that carry no position, which a CPU-sized
  build never managed (build 2: blobs); with it the UNet sharpens a layout it is given. The map is drawn by a small
  convolutional decoder (``engine.recon.spatial_decoder``; build 5): builds 3-4's MLP head gave blobs whose category
  an independent classifier named in 22 % of held-out images, the conv head's maps alone in 62 %. The generator
  learns to invert the embedding (unCLIP / IP-Adapter-like), so any brain encoder that predicts demo embeddings can
  drive it.

The training recipe is ``engine/recon/demo_training.py``; ``resources/models/demo-generator/`` is the shipped build.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engine.config import check

FOLDER_NAME = "demo-generator"
MANIFEST = "generator.json"
PARTS = ("vae", "unet", "adapter", "scheduler")  # the folder's sub-folders, beside the manifest
OPTIMIZER_FILE = "train_state/optimizer.safetensors"  # checkpoints only; not shipped


@dataclass(frozen=True)
class DemoGeneratorConfig:
    """Architecture of the demo generator (stored in ``generator.json``)."""

    image_size: int = 64
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (16, 32, 64)
    unet_channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, True, True)
    context_dim: int = 64
    n_tokens: int = 4
    attention_head_dim: int = 32
    embed_dim: int = 128  # demo image embedder, pooled
    # The condition tokens also enter the timestep embedding (diffusers ``addition_embed_type="text"``: attention
    # pooling → added to the time embedding, i.e. FiLM on every ResNet block), so global attributes such as colour
    # and category are learned in far fewer CPU steps than through cross-attention alone. Same UNet inputs.
    global_condition: bool = True
    # Channels of a latent-sized map the adapter predicts from the embedding, concatenated to the noisy latents
    # (InstructPix2Pix-style): the UNet then knows where things are from the first step. 0: none.
    spatial_channels: int = 0
    # What predicts that map from the embedding (``engine.recon.spatial_decoder``): "mlp" (builds 3, 4) or "conv".
    spatial_head: str = "mlp"

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    @property
    def spatial_shape(self) -> tuple[int, int, int] | None:
        return (self.spatial_channels, self.latent_size, self.latent_size) if self.spatial_channels else None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DemoGeneratorConfig":
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


# The 16 × 16 demo generator's architecture (builds 2-6): build 2's + the spatial condition (build 3), drawn by a conv
# head (build 5). The shipped build 7 is ``demo_architecture(32)``; its folder's ``generator.json`` records it.
DEMO_ARCHITECTURE = DemoGeneratorConfig(spatial_channels=4, spatial_head="conv")
# Per latent size of a 64-px image: the VAE's blocks and, where they differ from ``DEMO_ARCHITECTURE``'s, the UNet's
# levels. 32 × 32 (one downsampling less) keeps the small objects the 16 × 16 latent loses: VAEs trained alike
# round-trip the demo's test images with an independent judge's category 100 % against 93 % (8 × 16 × 16: 96 %;
# docs/benchmarks.md, "Demo generator build 6"). Its UNet is build 6's with one more level in front (32 channels at
# 32 × 32, no attention), so attention stays at 8 × 8 and 4 × 4: 1.6× build 6's cost per step on a CPU, where the
# same three levels on 32 × 32 latents (self-attention at 16 × 16) cost 5.5×.
ARCHITECTURE_BY_LATENT_SIZE = {
    16: {"vae_channels": (16, 32, 64)},
    32: {"vae_channels": (16, 32), "unet_channels": (32, 32, 64, 64), "attention_levels": (False, False, True, True)},
}


def demo_architecture(latent_size: int = 16) -> DemoGeneratorConfig:
    """``DEMO_ARCHITECTURE`` with the VAE that gives ``latent_size`` × ``latent_size`` latents, and its UNet."""
    check(latent_size in ARCHITECTURE_BY_LATENT_SIZE, "demo generator", "latent_size",
          f"one of {sorted(ARCHITECTURE_BY_LATENT_SIZE)}", latent_size)
    return replace(DEMO_ARCHITECTURE, **ARCHITECTURE_BY_LATENT_SIZE[latent_size])


def build_vae(cfg: DemoGeneratorConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.vae_channels,
                         layers_per_block=1, latent_channels=cfg.latent_channels, norm_num_groups=8,
                         sample_size=cfg.image_size, mid_block_add_attention=False)


def build_unet(cfg: DemoGeneratorConfig):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return UNet2DConditionModel(sample_size=cfg.latent_size, in_channels=cfg.latent_channels + cfg.spatial_channels,
                                out_channels=cfg.latent_channels, layers_per_block=1,
                                block_out_channels=cfg.unet_channels, down_block_types=down, up_block_types=up,
                                cross_attention_dim=cfg.context_dim, attention_head_dim=cfg.attention_head_dim,
                                norm_num_groups=16,
                                addition_embed_type="text" if cfg.global_condition else None,
                                addition_embed_type_num_heads=max(1, cfg.context_dim // 16))


def build_scheduler():
    """The training noise schedule (SD-1.5's: 1000 steps, scaled-linear β 0.00085 → 0.012, ε-prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False)


def build_adapter(cfg: DemoGeneratorConfig):
    from engine.recon.conditioning import ConditioningAdapter, ConditioningConfig

    return ConditioningAdapter(ConditioningConfig(input_shape=(cfg.embed_dim,), n_tokens=cfg.n_tokens,
                                                  context_dim=cfg.context_dim, pooled_tokens=cfg.n_tokens,
                                                  spatial_shape=cfg.spatial_shape, spatial_head=cfg.spatial_head))


def save_demo_generator(out_dir, *, vae, unet, adapter, scheduler, cfg: DemoGeneratorConfig,
                        recipe=None, embedder_identity: str | None = None,
                        stimuli: str | None = None, train_state: dict | None = None, optimizer: dict | None = None,
                        vae_from: str | Path | None = None, init_from: str | Path | None = None) -> Path:
    """Write the generator folder (diffusers layout for vae/unet/scheduler, plus adapter and ``generator.json``).

    ``recipe`` is the ``DemoTrainConfig`` that built it, if any. ``train_state`` (cycle, step, complete) and
    ``optimizer`` (flat tensors, ``train_state/optimizer.safetensors``) make the folder a checkpoint
    ``train_demo_generator(continue_from=...)`` resumes from.
    """
    from engine.atomic import atomic_dir, atomic_save_safetensors

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        save_model_part(tmp, "vae", vae)
        save_model_part(tmp, "unet", unet)
        scheduler.save_pretrained(tmp / "scheduler")
        adapter.save(tmp / "adapter")
        if optimizer:
            (tmp / OPTIMIZER_FILE).parent.mkdir()
            atomic_save_safetensors(tmp / OPTIMIZER_FILE, optimizer)
        write_manifest(tmp, build_manifest(cfg, recipe=recipe, embedder_identity=embedder_identity, stimuli=stimuli,
                                           train_state=train_state, vae_from=vae_from, init_from=init_from))
    return out_dir


def save_model_part(folder: Path, part: str, model) -> None:
    """``model.save_pretrained(folder / part)`` (diffusers layout, safetensors), without the ``_name_or_path`` a
    reused part would carry: the build machine's path of its source folder."""
    model.save_pretrained(folder / part, safe_serialization=True)
    config = json.loads((folder / part / "config.json").read_text(encoding="utf-8"))
    if config.pop("_name_or_path", None) is not None:
        (folder / part / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build_manifest(cfg: DemoGeneratorConfig, *, recipe=None, embedder_identity: str | None = None,
                   stimuli: str | None = None, train_state: dict | None = None, vae_from=None,
                   init_from=None) -> dict:
    """The ``generator.json`` of a build (``save_demo_generator``'s arguments of the same names)."""
    manifest = {"kind": "demo", "schema": 1, "config": cfg.to_dict(), "embedder": "demo",
                "embedder_identity": embedder_identity, "condition": "pooled", "stimuli": stimuli,
                "recipe": recipe.to_dict() if recipe else None,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if train_state is not None:
        manifest["train_state"] = train_state
    if vae_from is not None:
        manifest["vae_from"] = str(vae_from)
    if init_from is not None:
        manifest["init_from"] = str(init_from)
    return manifest


def write_manifest(folder, manifest: dict) -> None:
    """``generator.json`` of a folder being written (inside its ``atomic_dir``)."""
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
