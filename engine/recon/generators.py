"""Generators: the latent diffusion models that turn a condition into an image, loaded from local folders only.

``load_generator(spec)`` takes ``"demo"`` (the shipped CPU demo generator) or the path of a Stable Diffusion 1.5 or
SDXL folder in diffusers layout (``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``; ``text_encoder*/`` and
``tokenizer*/`` only for the prompt-token path). Nothing is downloaded: the folder is read with
``from_pretrained(local_dir)`` and ``HF_HUB_OFFLINE`` is honoured. A missing or mismatched part raises
``ModelFolderError`` naming it. Weights must be safetensors (``.bin`` files are pickles and are refused).

A ``Generator`` (``engine/recon/generator.py``) hides the differences the sampling loop should not see:

- SD-1.5-type UNets read cross-attention tokens ``(batch, 77, 768)`` (or whatever the folder's context size is);
- SDXL-type UNets also read a pooled vector and six size/crop ids (``added_cond_kwargs``);
- with ``prompt_tokens=True`` the brain tokens are appended to the tokens of an empty prompt encoded once by the
  folder's own text encoder(s) (the UNet's text pathway keeps seeing what it was trained on); the brain tokens share
  the text cross-attention;
- with an IP-Adapter (``ip_adapter``: a weights file, or ``"auto"`` for the folder's ``ip_adapter/*.safetensors``
  when it has one) the UNet also reads an image embedding through the adapter's image projection and decoupled
  cross-attention (diffusers' IP-Adapter processors); the conditioning adapter then predicts that embedding too.
  The file is in the original IP-Adapter format (keys ``image_proj.*`` and ``ip_adapter.*``), plain IP-Adapter only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError, ModelFolderError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.recon.conditioning import ConditioningAdapter
from engine.recon.empty_prompt import encode_empty_prompt
from engine.recon.generator import Generator, finish_loading, resolve_device
from engine.recon.ip_adapter import find_ip_adapter, load_ip_adapter
from engine.recon.model_folder import check_part, load_part, read_scheduler_config

KINDS = ("demo", "sd15", "sdxl", "own")  # own: trained on the user's images (engine/recon/own_generator.py)


@dataclass(frozen=True)
class GeneratorConfig:
    """How to load a generator.

    Parameters
    ----------
    spec : str
        ``"demo"`` or a local diffusers folder (SD-1.5 or SDXL layout).
    device : str or None
        ``"cpu"``, ``"cuda"``...; CUDA when present by default.
    dtype : {"auto", "fp32", "fp16", "bf16"}
        ``auto``: bf16 on CUDA, fp32 on the CPU.
    compile : bool or str
        ``torch.compile`` the UNet: False (eager), True / ``"default"``, ``"reduce-overhead"`` (also replays the
        UNet as CUDA graphs: for small, launch-bound batches) or ``"max-autotune"``. The first call per batch shape
        compiles (minutes for an SD-size UNet; Inductor's cache makes later processes start warm).
    channels_last : bool or None
        UNet and VAE in the channels-last memory layout (faster convolutions on tensor cores); None: on CUDA only.
    prompt_tokens : bool
        Append the brain tokens to an empty prompt's text tokens (needs the text encoders in the folder).
    image_size : int or None
        Output size in pixels; default the UNet's native size (SD-1.5 upstream NeuroLens uses 256).
    ip_adapter : str or None
        An IP-Adapter weights file (safetensors) for SD-1.5 / SDXL folders, ``"auto"`` for the folder's own
        ``ip_adapter/*.safetensors`` if it has one, or None (no image-embedding path).
    """

    spec: str = "demo"
    device: str | None = None
    dtype: str = "auto"
    compile: bool | str = False
    channels_last: bool | None = None
    prompt_tokens: bool = False
    image_size: int | None = None
    ip_adapter: str | None = None


def load_generator(spec: str | GeneratorConfig = "demo", **kwargs) -> Generator:
    """Load ``"demo"`` or a local SD-1.5 / SDXL folder (see ``GeneratorConfig`` for the options)."""
    cfg = spec if isinstance(spec, GeneratorConfig) else GeneratorConfig(spec=str(spec), **kwargs)
    if cfg.spec == "demo":
        return load_demo_generator(config=cfg)
    folder = Path(cfg.spec).expanduser()
    if (folder / "generator.json").is_file():  # a demo-layout folder, or one trained on the user's images
        from engine.recon.own_generator import is_own_generator, load_own_generator

        if is_own_generator(folder):
            return load_own_generator(folder, cfg)
        return load_demo_generator(folder, config=cfg)
    return load_diffusers_folder(folder, config=cfg)


def demo_folder() -> Path:
    from engine.recon.demo_generator import FOLDER_NAME
    from engine.resources import resource_path

    return resource_path("models", FOLDER_NAME)


def load_demo_generator(folder: str | Path | None = None, *, config: GeneratorConfig | None = None) -> Generator:
    """The demo generator from ``folder`` (default: the shipped ``resources/models/demo-generator``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cfg = config or GeneratorConfig()
    folder = Path(folder) if folder is not None else demo_folder()
    manifest = folder / "generator.json"
    if not manifest.is_file():
        raise ModelFolderError(folder, "generator.json", "rebuild the demo generator with "
                               "python resources/build/build_demo_generator.py")
    meta = read_object(manifest)
    for part in ("unet", "vae", "scheduler", "adapter"):
        if not (folder / part).is_dir():
            stage = (meta.get("train_state") or {}).get("stage")
            raise ModelFolderError(folder, f"{part}/", f"a build checkpoint after its {stage} stage: continue it with "
                                   "resources/build/build_demo_generator.py --continue-from" if stage else "")
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    unet = load_part(UNet2DConditionModel, folder, "unet")
    vae = load_part(AutoencoderKL, folder, "vae")
    sched = read_scheduler_config(folder)
    adapter = ConditioningAdapter.load(folder / "adapter")
    image_size = int(meta["config"]["image_size"])
    gen = Generator(kind="demo", path="demo" if config is None or config.spec == "demo" else str(folder),
                    unet=unet, vae=vae, scheduler_config=sched, image_size=image_size,
                    context_dim=int(unet.config.cross_attention_dim), n_tokens=adapter.config.n_tokens,
                    adapter=adapter, embedder=meta.get("embedder"), device=device, dtype=dtype, info=meta)
    return finish_loading(gen, cfg)


def folder_kind(folder: Path) -> str:
    """``"sd15"`` or ``"sdxl"`` for a diffusers folder (from ``model_index.json`` and the UNet config)."""
    if not folder.is_dir():
        raise ModelFolderError(folder, "the folder itself", "expected 'demo' or a local diffusers model folder")
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelFolderError(folder, "model_index.json", "expected a Stable Diffusion folder in diffusers layout")
    try:
        cls = read_object(index).get("_class_name", "")
    except json.JSONDecodeError as e:
        raise ModelFolderError(folder, "a valid model_index.json", str(e)) from None
    check_part(folder, "unet")
    unet_cfg = read_object(folder / "unet" / "config.json")
    is_xl = "XL" in cls or unet_cfg.get("addition_embed_type") == "text_time"
    return "sdxl" if is_xl else "sd15"


def load_diffusers_folder(folder: str | Path, *, config: GeneratorConfig | None = None) -> Generator:
    """An SD-1.5 or SDXL generator from a local diffusers folder; ``ModelFolderError`` names any missing part."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cfg = config or GeneratorConfig(spec=str(folder))
    folder = Path(folder).expanduser()
    kind = folder_kind(folder)
    check_part(folder, "vae")
    sched = read_scheduler_config(folder)
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    unet = load_part(UNet2DConditionModel, folder, "unet")
    vae = load_part(AutoencoderKL, folder, "vae")
    if vae.config.latent_channels != unet.config.in_channels:
        raise ModelFolderError(folder, "a VAE matching the UNet",
                               f"vae/config.json latent_channels {vae.config.latent_channels} != unet/config.json "
                               f"in_channels {unet.config.in_channels}")
    context = int(unet.config.cross_attention_dim)
    pooled_dim = None
    if kind == "sdxl":
        n_ids = 6
        pooled_dim = int(unet.config.projection_class_embeddings_input_dim
                         - n_ids * unet.config.addition_time_embed_dim)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    image_size = int(cfg.image_size or unet.config.sample_size * scale)
    if image_size % (scale * 2 ** (len(unet.config.block_out_channels) - 1)):
        raise ConfigError(f"image_size: expected a multiple of {scale * 2 ** (len(unet.config.block_out_channels) - 1)}"
                          f" for {folder}, found {image_size}")
    gen = Generator(kind=kind, path=str(folder), unet=unet, vae=vae, scheduler_config=sched, image_size=image_size,
                    context_dim=context, n_tokens=77, pooled_dim=pooled_dim, device=device, dtype=dtype,
                    info={"model_index": read_object(folder / "model_index.json")})
    gen = finish_loading(gen, cfg)
    ip_file = find_ip_adapter(folder, cfg.ip_adapter)
    if ip_file is not None:
        gen.image_embed_dim = load_ip_adapter(gen.unet, ip_file)
        gen.info["ip_adapter"] = str(ip_file)
    if cfg.prompt_tokens:
        tokens, pooled = encode_empty_prompt(folder, kind, context)
        gen.base_tokens = tokens.to(device, dtype)
        gen.base_pooled = None if pooled is None else pooled.to(device, dtype)
    return gen
