"""``Generator``: a loaded latent diffusion model (UNet, VAE, scheduler configuration) on one device, hiding the
differences the sampling loop should not see (SD-1.5 tokens, SDXL pooled vector and size ids, IP-Adapter image
embeddings, prompt tokens); ``finish_loading`` puts a freshly loaded one on its device and precision.

The loaders are in ``engine/recon/generators.py`` (``load_generator``) and ``own_generator.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.errors import ConfigError, DeviceError
from engine.recon.conditioning import Condition, ConditioningAdapter, ConditioningConfig


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
        head = self.adapter.config.spatial_head if self.adapter is not None else "mlp"
        return ConditioningConfig(input_shape=tuple(input_shape), n_tokens=self.n_tokens,
                                  context_dim=self.context_dim, pooled_dim=self.pooled_dim,
                                  image_embed_dim=self.image_embed_dim, spatial_shape=spatial, spatial_head=head)

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


def finish_loading(gen: Generator, cfg) -> Generator:
    """``gen`` on its device and precision, frozen, in eval mode, with fused attention and the memory layout and
    compilation ``cfg`` (a ``GeneratorConfig``) asks for."""
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
