"""Generators: the latent diffusion models that turn a condition into an image, loaded from local folders only.

``load_generator(spec)`` takes ``"demo"`` (the shipped CPU demo generator) or the path of a Stable Diffusion 1.5 or
SDXL folder in diffusers layout (``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``; ``text_encoder*/`` and
``tokenizer*/`` only for the prompt-token path). Nothing is downloaded: the folder is read with
``from_pretrained(local_dir)`` and ``HF_HUB_OFFLINE`` is honoured. A missing or mismatched part raises
``ModelFolderError`` naming it. Weights must be safetensors (``.bin`` files are pickles and are refused).

A ``Generator`` hides the differences the sampling loop should not see:

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, DeviceError, ModelFolderError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.recon.conditioning import Condition, ConditioningAdapter, ConditioningConfig
from engine.models.construction import MODEL_BUILD_LOCK

KINDS = ("demo", "sd15", "sdxl", "own")  # own: trained on the user's images (engine/recon/own_generator.py)
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


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


@dataclass
class Generator:
    """A loaded generator: UNet, VAE and the scheduler configuration, on one device.

    Attributes
    ----------
    kind : {"demo", "sd15", "sdxl"}
    path : str
        ``"demo"`` or the folder.
    image_size : int
        Pixels per side of the generated images.
    context_dim : int
        The UNet's cross-attention width.
    n_tokens : int
        Number of tokens a fresh conditioning adapter should produce (4 demo, 77 SD).
    pooled_dim : int or None
        SDXL pooled-condition length, None for SD-1.5 and the demo.
    adapter : ConditioningAdapter or None
        The demo generator's own image-embedding adapter (trained with it); None for real generators.
    embedder : str or None
        The image embedder whose embeddings ``adapter`` reads (``"demo"``).
    image_embed_dim : int or None
        Length of the IP-Adapter image embedding when one is loaded.
    """

    kind: str
    path: str
    unet: object
    vae: object
    scheduler_config: dict
    image_size: int
    context_dim: int
    n_tokens: int
    pooled_dim: int | None = None
    image_embed_dim: int | None = None
    adapter: ConditioningAdapter | None = None
    embedder: str | None = None
    base_tokens: object = None  # (1, L, context_dim) empty-prompt tokens when prompt_tokens is on
    base_pooled: object = None
    device: object = None
    dtype: object = None
    unet_call: object = None
    info: dict = field(default_factory=dict)

    # ---- shapes ---------------------------------------------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        # out_channels: a UNet with a spatial condition takes it concatenated to the latents (in = latent + C).
        return int(self.unet.config.out_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_scale_factor

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def adapter_config(self, input_shape) -> ConditioningConfig:
        """The config of a fresh conditioning adapter from embeddings of ``input_shape`` to this generator."""
        spatial = self.adapter.config.spatial_shape if self.adapter is not None else None
        return ConditioningConfig(input_shape=tuple(input_shape), n_tokens=self.n_tokens,
                                  context_dim=self.context_dim, pooled_dim=self.pooled_dim,
                                  image_embed_dim=self.image_embed_dim, spatial_shape=spatial)

    # ---- the UNet call ----------------------------------------------------------------------------------------------

    def time_ids(self, batch: int):
        """SDXL size/crop ids ``(batch, 6)``: original size, crop top-left (0, 0), target size."""
        import torch

        s = float(self.image_size)
        return torch.tensor([[s, s, 0.0, 0.0, s, s]], device=self.device, dtype=self.dtype).expand(batch, -1)

    def unet_inputs(self, cond: Condition) -> dict:
        """``encoder_hidden_states`` (and ``added_cond_kwargs`` for SDXL) for a batch of conditions."""
        import torch

        cond = cond.to(self.device, self.dtype)
        tokens = cond.tokens
        if self.base_tokens is not None:
            tokens = torch.cat([self.base_tokens.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        kwargs = {"encoder_hidden_states": tokens}
        if self.kind == "sdxl":
            pooled = cond.pooled
            if pooled is None:
                raise ConfigError("SDXL generator: the condition has no pooled vector; the conditioning adapter "
                                  "needs pooled_dim set (use Generator.adapter_config)")
            if self.base_pooled is not None:
                pooled = pooled + self.base_pooled
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": self.time_ids(tokens.shape[0])}
        if self.image_embed_dim:
            if cond.image_embeds is None:
                raise ConfigError("IP-Adapter generator: the condition has no image embedding; the conditioning "
                                  "adapter needs image_embed_dim set (use Generator.adapter_config)")
            # One image per item: (batch, 1, D), as diffusers' MultiIPAdapterImageProjection expects.
            kwargs.setdefault("added_cond_kwargs", {})["image_embeds"] = [cond.image_embeds[:, None, :]]
        return kwargs

    def predict_noise(self, latents, t, cond: Condition):
        """The UNet's ε prediction ``(batch, C, h, w)`` for noisy ``latents`` at timestep ``t`` under ``cond``."""
        import torch

        call = self.unet_call or self.unet
        if cond.spatial is not None:  # the spatial condition map rides along the latents' channels
            latents = torch.cat([latents.to(self.dtype), cond.spatial.to(latents.device, self.dtype)], dim=1)
        return call(self._layout(latents.to(self.dtype)), t, **self.unet_inputs(cond)).sample

    def _layout(self, x):
        """``x`` in the memory layout of the weights (channels-last on CUDA by default; see ``GeneratorConfig``)."""
        import torch

        return x.contiguous(memory_format=torch.channels_last) if self.info.get("channels_last") else x

    # ---- pixels <-> latents ---------------------------------------------------------------------------------------

    def encode(self, images_u8: np.ndarray):
        """uint8 ``(N, H, W, 3)`` → scaled latents ``(N, C, h, w)`` (posterior mean), resized to ``image_size``."""
        import torch
        from torch.nn import functional as F

        x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float().to(self.device)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        x = (x / 127.5 - 1.0).to(self.dtype)
        with torch.no_grad():
            return self.vae.encode(self._layout(x)).latent_dist.mean * self.scaling_factor

    def decode_batch(self) -> int:
        """Images per VAE decode call: 8 on the CPU; on a GPU as many as keep the decoder's activations near 4 GiB
        (its full-resolution layers hold 128 channels × image pixels, about six such tensors alive at once)."""
        if getattr(self.device, "type", "cpu") != "cuda":
            return 8
        per_image = 6 * 128 * self.image_size * self.image_size * self.vae.dtype.itemsize
        return int(max(1, min(64, 2**32 // per_image)))

    def decode(self, latents, *, batch_size: int | None = None) -> np.ndarray:
        """Scaled latents ``(N, C, h, w)`` → uint8 images ``(N, image_size, image_size, 3)``, decoded in the
        generator's precision (bf16 on CUDA by default) in slices of ``batch_size`` (default ``decode_batch()``)."""
        import torch

        batch_size = batch_size or self.decode_batch()
        out = []
        with torch.no_grad():
            for s in range(0, latents.shape[0], batch_size):
                z = self._layout(latents[s:s + batch_size].to(self.device, self.dtype) / self.scaling_factor)
                x = self.vae.decode(z).sample.float().clamp(-1, 1)
                out.append(((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


def resolve_device(device: str | None, dtype: str = "auto"):
    """(torch.device, torch.dtype) for a device name and a precision name (bf16 on CUDA when ``auto``)."""
    import torch

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device '{device}': CUDA is not available on this machine; use --device cpu")
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    if dtype not in table:
        raise ConfigError(f"generator dtype: expected one of ['auto', 'fp32', 'fp16', 'bf16'], found {dtype!r}")
    if dev.type == "cpu" and dtype == "fp16":
        raise DeviceError("dtype fp16 is not supported on the CPU; use fp32 (or bf16)")
    return dev, table[dtype]


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


def _finish(gen: Generator, cfg: GeneratorConfig) -> Generator:
    import torch

    from diffusers.models.attention_processor import AttnProcessor2_0

    gen.unet.set_attn_processor(AttnProcessor2_0())  # PyTorch scaled-dot-product attention (fused kernels)
    channels_last = cfg.channels_last if cfg.channels_last is not None else gen.device.type == "cuda"
    for m in (gen.unet, gen.vae):
        m.to(gen.device).eval().requires_grad_(False)
        if gen.dtype != torch.float32:
            m.to(dtype=gen.dtype)
        if channels_last:
            m.to(memory_format=torch.channels_last)
    gen.info["channels_last"] = bool(channels_last)
    if gen.adapter is not None:
        gen.adapter.to(gen.device).eval()
    if cfg.compile:
        mode = None if cfg.compile is True or cfg.compile == "default" else str(cfg.compile)
        if mode not in (None, "reduce-overhead", "max-autotune"):
            raise ConfigError(f"generator compile: expected False, True, 'default', 'reduce-overhead' or "
                              f"'max-autotune', found {cfg.compile!r}")
        gen.unet_call = torch.compile(gen.unet, mode=mode)
    return gen


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
    for part in ("unet", "vae", "scheduler", "adapter"):
        if not (folder / part).is_dir():
            raise ModelFolderError(folder, f"{part}/")
    meta = read_object(manifest)
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    unet = _from_pretrained(UNet2DConditionModel, folder, "unet")
    vae = _from_pretrained(AutoencoderKL, folder, "vae")
    sched = _read_scheduler_config(folder)
    adapter = ConditioningAdapter.load(folder / "adapter")
    image_size = int(meta["config"]["image_size"])
    gen = Generator(kind="demo", path="demo" if config is None or config.spec == "demo" else str(folder),
                    unet=unet, vae=vae, scheduler_config=sched, image_size=image_size,
                    context_dim=int(unet.config.cross_attention_dim), n_tokens=adapter.config.n_tokens,
                    adapter=adapter, embedder=meta.get("embedder"), device=device, dtype=dtype, info=meta)
    return _finish(gen, cfg)


def _read_scheduler_config(folder: Path) -> dict:
    p = folder / "scheduler" / "scheduler_config.json"
    if not p.is_file():
        raise ModelFolderError(folder, "scheduler/scheduler_config.json")
    try:
        return read_object(p)
    except json.JSONDecodeError as e:
        raise ModelFolderError(folder, "a valid scheduler/scheduler_config.json", str(e)) from None


def _check_part(folder: Path, part: str, weights: tuple[str, ...] = WEIGHT_NAMES) -> Path:
    sub = folder / part
    if not sub.is_dir():
        raise ModelFolderError(folder, f"{part}/")
    if not (sub / "config.json").is_file():
        raise ModelFolderError(folder, f"{part}/config.json")
    if weights and not any((sub / w).is_file() for w in weights):
        pickled = [p.name for p in sub.glob("*.bin")]
        hint = (f"found only {pickled[0]} (a pickle, which NeuroLens does not load); convert it to safetensors"
                if pickled else "")
        raise ModelFolderError(folder, f"{part}/{weights[0]}", hint)
    return sub


def _from_pretrained(cls, folder: Path, part: str):
    """``cls.from_pretrained(folder / part)`` offline; a load failure becomes a ``ModelFolderError`` naming the part."""
    try:
        with MODEL_BUILD_LOCK:  # see engine/models/construction.py
            return cls.from_pretrained(folder / part, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).split(". ")[0].replace(str(folder / part), "").strip()
        raise ModelFolderError(folder, f"{part}/ weights that match {part}/config.json", first[:300]) from None


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
    _check_part(folder, "unet")
    unet_cfg = read_object(folder / "unet" / "config.json")
    is_xl = "XL" in cls or unet_cfg.get("addition_embed_type") == "text_time"
    return "sdxl" if is_xl else "sd15"


def load_diffusers_folder(folder: str | Path, *, config: GeneratorConfig | None = None) -> Generator:
    """An SD-1.5 or SDXL generator from a local diffusers folder; ``ModelFolderError`` names any missing part."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cfg = config or GeneratorConfig(spec=str(folder))
    folder = Path(folder).expanduser()
    kind = folder_kind(folder)
    _check_part(folder, "vae")
    sched = _read_scheduler_config(folder)
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    unet = _from_pretrained(UNet2DConditionModel, folder, "unet")
    vae = _from_pretrained(AutoencoderKL, folder, "vae")
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
    gen = _finish(gen, cfg)
    ip_file = find_ip_adapter(folder, cfg.ip_adapter)
    if ip_file is not None:
        gen.image_embed_dim = load_ip_adapter(gen.unet, ip_file)
        gen.info["ip_adapter"] = str(ip_file)
    if cfg.prompt_tokens:
        tokens, pooled = encode_empty_prompt(folder, kind, context)
        gen.base_tokens = tokens.to(device, dtype)
        gen.base_pooled = None if pooled is None else pooled.to(device, dtype)
    return gen


IP_ADAPTER_DIR = "ip_adapter"


def find_ip_adapter(folder: Path, spec: str | None) -> Path | None:
    """The IP-Adapter file to load: ``spec`` itself, the folder's only ``ip_adapter/*.safetensors`` for ``"auto"``
    (None when the folder has none), or None."""
    if not spec:
        return None
    if spec != "auto":
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelFolderError(path.parent, path.name, "the IP-Adapter weights file given with ip_adapter")
        return path
    found = sorted((folder / IP_ADAPTER_DIR).glob("*.safetensors")) if (folder / IP_ADAPTER_DIR).is_dir() else []
    if len(found) > 1:
        raise ModelFolderError(folder, f"a single {IP_ADAPTER_DIR}/*.safetensors",
                               f"found {[p.name for p in found]}; pass the one to use with ip_adapter")
    return found[0] if found else None


def load_ip_adapter(unet, path: Path) -> int:
    """Load a plain IP-Adapter (original key format) into ``unet``; return its image-embedding length."""
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types on damaged files
        raise ModelFolderError(path.parent, f"{path.name} readable as safetensors", str(e)[:200]) from None
    parts: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in parts:
            parts[head][rest] = value
    if "proj.weight" not in parts["image_proj"]:
        raise ModelFolderError(path.parent, f"{path.name} key image_proj.proj.weight",
                               "only the plain IP-Adapter (linear image projection) is supported")
    n_cross = sum(1 for name in unet.attn_processors if not name.endswith("attn1.processor"))
    if len(parts["ip_adapter"]) != 2 * n_cross:
        raise ModelFolderError(path.parent, f"{path.name} with to_k_ip/to_v_ip for {n_cross} cross-attention layers",
                               f"found {len(parts['ip_adapter'])} ip_adapter.* tensors")
    dtype, device = unet.dtype, unet.device
    try:
        unet._load_ip_adapter_weights([parts], low_cpu_mem_usage=False)
    except (KeyError, RuntimeError) as e:
        raise ModelFolderError(path.parent, f"{path.name} matching the UNet", str(e).split(". ")[0][:300]) from None
    unet.to(device=device, dtype=dtype).requires_grad_(False)
    return int(parts["image_proj"]["proj.weight"].shape[-1])


def encode_empty_prompt(folder: Path, kind: str, context_dim: int):
    """The text tokens ``(1, 77, context_dim)`` (and SDXL pooled ``(1, P)``) of the empty prompt, from the folder's
    own tokenizer(s) and text encoder(s); the encoders are freed afterwards."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    parts = [("tokenizer", "text_encoder")] + ([("tokenizer_2", "text_encoder_2")] if kind == "sdxl" else [])
    states, pooled = [], None
    for tok_name, enc_name in parts:
        tdir = folder / tok_name
        has_fast = (tdir / "tokenizer.json").is_file()
        if not has_fast and not ((tdir / "vocab.json").is_file() and (tdir / "merges.txt").is_file()):
            raise ModelFolderError(folder, f"{tok_name}/tokenizer.json (or vocab.json + merges.txt)",
                                   "needed for prompt_tokens; turn prompt_tokens off to skip the text encoders")
        _check_part(folder, enc_name, ("model.safetensors", "model.fp16.safetensors"))
        tok = CLIPTokenizer.from_pretrained(tdir, local_files_only=True)
        cls = CLIPTextModelWithProjection if enc_name == "text_encoder_2" else CLIPTextModel
        enc = cls.from_pretrained(folder / enc_name, local_files_only=True).eval()
        ids = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            out = enc(ids, output_hidden_states=True)
        # SDXL reads the penultimate layer; SD-1.5 the last one.
        states.append(out.hidden_states[-2] if kind == "sdxl" else out.last_hidden_state)
        if enc_name == "text_encoder_2":
            pooled = out.text_embeds
        del enc
    tokens = torch.cat(states, dim=-1)
    if tokens.shape[-1] != context_dim:
        raise ModelFolderError(folder, "text encoder(s) matching the UNet",
                               f"text width {tokens.shape[-1]} != unet cross_attention_dim {context_dim}")
    return tokens, pooled

