"""The conditioning adapter: a brain (or image) embedding → the generator's cross-attention condition.

An encoder predicts an embedding per trial, pooled ``(batch, D)`` or tokens ``(batch, T, D)``. The adapter turns it
into what the UNet reads:

- ``tokens`` ``(batch, n_tokens, context_dim)``: cross-attention tokens (77 × 768 for SD-1.5, or the generator's size);
- ``pooled`` ``(batch, pooled_dim)``: the SDXL-type pooled vector (``text_embeds``), when the generator has one;
- ``image_embeds`` ``(batch, image_embed_dim)``: an image-encoder embedding for a generator loaded with an IP-Adapter
  (its image projection and decoupled cross-attention read it), when it has one.

Path: standardise with training statistics → LayerNorm (so the shrunken predictions of a regression-trained encoder
keep the scale the generator was trained on) → per-token Linear to ``context_dim`` (a pooled input first becomes
``k`` tokens, unCLIP/IP-Adapter style) → Linear over the token axis to ``n_tokens`` (MinD-Vis's Conv1d T→77) →
learned positions → LayerNorm. The adapter also owns the learned null condition used for classifier-free guidance
(``engine.recon.guidance``), so training and sampling share it.

Saved as a folder: ``config.json`` (``ConditioningConfig``) + ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.config import Config, check
from engine.errors import CheckpointError, ConfigError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.recon.guidance import NullCondition, apply_drop
from engine.recon.spatial_decoder import SPATIAL_HEADS, build_spatial_decoder
from engine.models.construction import MODEL_BUILD_LOCK

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class ConditioningConfig(Config):
    """Shape of the adapter.

    Parameters
    ----------
    input_shape : tuple of int
        One embedding: ``(D,)`` pooled or ``(T, D)`` tokens.
    n_tokens : int
        Number of cross-attention tokens produced.
    context_dim : int
        Width of each token (the UNet's ``cross_attention_dim``).
    pooled_dim : int or None
        Length of the pooled condition for SDXL-type UNets (``text_embeds``), None otherwise.
    pooled_tokens : int
        For a pooled input, how many tokens the first projection makes before mixing to ``n_tokens``.
    image_embed_dim : int or None
        Length of the IP-Adapter image embedding (e.g. 1024 for CLIP ViT-H/14), None without an IP-Adapter.
    spatial_shape : (C, h, w) or None
        A latent-sized map predicted from the embedding and concatenated to the UNet's noisy latents (as
        InstructPix2Pix concatenates its image latents), for UNets with ``in_channels`` = latent channels + C; None
        otherwise. Its null condition is zeros.
    spatial_head : str
        What predicts that map (``engine.recon.spatial_decoder``): ``"mlp"`` or ``"conv"``.
    """

    input_shape: tuple[int, ...]
    n_tokens: int = 77
    context_dim: int = 768
    pooled_dim: int | None = None
    pooled_tokens: int = 4
    image_embed_dim: int | None = None
    spatial_shape: tuple[int, int, int] | None = None
    spatial_head: str = "mlp"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        if self.spatial_shape is not None:
            spatial = tuple(int(s) for s in self.spatial_shape)
            check(len(spatial) == 3 and all(s > 0 for s in spatial), "ConditioningConfig", "spatial_shape",
                  "(C, h, w)", spatial)
            object.__setattr__(self, "spatial_shape", spatial)
        check(self.spatial_head in SPATIAL_HEADS, "ConditioningConfig", "spatial_head",
              f"one of {', '.join(SPATIAL_HEADS)}", self.spatial_head)
        if self.spatial_head == "conv" and self.spatial_shape is not None:
            h, w = self.spatial_shape[1:]
            check(h == w and h >= 4 and not h & (h - 1), "ConditioningConfig", "spatial_shape",
                  "a square map of 4·2^k for the conv spatial head", self.spatial_shape)
        check(len(shape) in (1, 2) and all(s > 0 for s in shape), "ConditioningConfig", "input_shape",
              "(D,) or (T, D)", shape)
        for key in ("n_tokens", "context_dim", "pooled_tokens"):
            check(int(getattr(self, key)) > 0, "ConditioningConfig", key, "a positive integer", getattr(self, key))

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.spatial_shape is None:
            d.pop("spatial_shape")  # config files of adapters without one stay as they were
        if self.spatial_head == "mlp":
            d.pop("spatial_head")
        return d


@dataclass
class Condition:
    """What the UNet is conditioned on.

    Attributes
    ----------
    tokens : Tensor (batch, n_tokens, context_dim)
    pooled : Tensor (batch, pooled_dim) or None
    image_embeds : Tensor (batch, image_embed_dim) or None
    spatial : Tensor (batch, C, h, w) or None
        Concatenated to the noisy latents (``ConditioningConfig.spatial_shape``).
    """

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    spatial: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        return int(self.tokens.shape[0])

    def _map(self, fn) -> "Condition":
        return Condition(fn(self.tokens), None if self.pooled is None else fn(self.pooled),
                         None if self.image_embeds is None else fn(self.image_embeds),
                         None if self.spatial is None else fn(self.spatial))

    def repeat(self, k: int) -> "Condition":
        """Each item ``k`` times in a row (``k`` samples per trial)."""
        return self._map(lambda x: x.repeat_interleave(k, 0))

    def cat(self, other: "Condition") -> "Condition":
        pooled = None if self.pooled is None else torch.cat([self.pooled, other.pooled])
        image = None if self.image_embeds is None else torch.cat([self.image_embeds, other.image_embeds])
        spatial = None if self.spatial is None else torch.cat([self.spatial, other.spatial])
        return Condition(torch.cat([self.tokens, other.tokens]), pooled, image, spatial)

    def to(self, device=None, dtype=None) -> "Condition":
        return self._map(lambda x: x.to(device=device, dtype=dtype))


class ConditioningAdapter(nn.Module):
    """Embedding ``(batch, *input_shape)`` → ``Condition``; owns the learned null condition (``self.null``)."""

    def __init__(self, config: ConditioningConfig) -> None:
        super().__init__()
        self.config = config
        shape = config.input_shape
        dim = shape[-1]
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))
        self.in_norm = nn.LayerNorm(dim)
        if len(shape) == 1:
            k = config.pooled_tokens
            self.proj = nn.Linear(dim, k * config.context_dim)
        else:
            k = shape[0]
            self.proj = nn.Linear(dim, config.context_dim)
        self._k = k
        self.mix = nn.Linear(k, config.n_tokens) if k != config.n_tokens else None
        self.pos = nn.Parameter(torch.zeros(config.n_tokens, config.context_dim))
        self.out_norm = nn.LayerNorm(config.context_dim)
        self.pooled_proj = (nn.Sequential(nn.LayerNorm(int(np.prod(shape))), nn.Linear(int(np.prod(shape)),
                                                                                       config.pooled_dim))
                            if config.pooled_dim else None)
        self.image_proj = (nn.Sequential(nn.LayerNorm(int(np.prod(shape))), nn.Linear(int(np.prod(shape)),
                                                                                      config.image_embed_dim))
                           if config.image_embed_dim else None)
        flat_dim = int(np.prod(shape))
        self.spatial_proj = (build_spatial_decoder(config.spatial_head, flat_dim, config.spatial_shape)
                             if config.spatial_shape else None)
        self.null = NullCondition(config.n_tokens, config.context_dim, config.pooled_dim, config.image_embed_dim)

    def set_statistics(self, embeddings) -> None:
        """Standardise inputs with the mean and std of ``embeddings`` ``(n, *input_shape)`` (training set)."""
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        self._check(x)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.config.input_shape:
            raise ConfigError(f"conditioning adapter: embedding shape: expected (batch, "
                              f"{', '.join(map(str, self.config.input_shape))}), found {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> Condition:
        """Parameters: x (batch, D) or (batch, T, D). Returns the ``Condition`` for those embeddings."""
        self._check(x)
        z = (x - self.mean) / self.std
        flat = z.reshape(z.shape[0], -1)
        if z.ndim == 2:
            z = z.unsqueeze(1)
        h = self.proj(self.in_norm(z))  # (batch, T or 1, k*ctx or ctx)
        h = h.reshape(h.shape[0], self._k, self.config.context_dim)
        if self.mix is not None:
            h = self.mix(h.transpose(1, 2)).transpose(1, 2)
        tokens = self.out_norm(h + self.pos)
        pooled = self.pooled_proj(flat) if self.pooled_proj is not None else None
        image = self.image_proj(flat) if self.image_proj is not None else None
        spatial = self.spatial_proj(flat) if self.spatial_proj is not None else None
        return Condition(tokens, pooled, image, spatial)

    def null_condition(self, batch: int) -> Condition:
        tokens, pooled = self.null.expand(batch)
        return Condition(tokens, pooled, self.null.expand_image(batch), self._null_spatial(batch))

    def _null_spatial(self, batch: int) -> torch.Tensor | None:
        if self.config.spatial_shape is None:
            return None
        return torch.zeros((batch, *self.config.spatial_shape), device=self.mean.device, dtype=self.mean.dtype)

    def drop(self, cond: Condition, mask: torch.Tensor) -> Condition:
        """``cond`` with the items in ``mask`` replaced by the null condition (training's condition dropout)."""
        tokens, pooled = apply_drop(cond.tokens, cond.pooled, self.null, mask)
        image = cond.image_embeds
        if image is not None:
            image = torch.where(mask.view(-1, 1).to(image.device), self.null.expand_image(len(mask)).to(image.dtype),
                                image)
        spatial = cond.spatial
        if spatial is not None:
            null = self._null_spatial(len(mask)).to(spatial.dtype)
            spatial = torch.where(mask.view(-1, 1, 1, 1).to(spatial.device), null, spatial)
        return Condition(tokens, pooled, image, spatial)

    # ---- persistence ------------------------------------------------------------------------------------------------

    def save(self, folder: str | Path, *, extra: dict | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``folder`` (the folder is replaced atomically)."""
        from engine.atomic import atomic_dir, atomic_save_safetensors

        folder = Path(folder)
        with atomic_dir(folder, overwrite=True) as tmp:
            meta = {"class": "ConditioningAdapter", "schema": 1, "config": self.config.to_dict(), **(extra or {})}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            atomic_save_safetensors(tmp / WEIGHTS_FILE, self.state_dict())
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ConditioningAdapter":
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder}: not a conditioning adapter folder: missing {name}")
        meta = read_object(folder / CONFIG_FILE)
        if meta.get("class") != "ConditioningAdapter":
            raise CheckpointError(f"{folder / CONFIG_FILE}: key 'class': expected 'ConditioningAdapter', "
                                  f"found {meta.get('class')!r}")
        with MODEL_BUILD_LOCK:  # see engine/models/construction.py
            adapter = cls(ConditioningConfig.from_dict(meta["config"]))
        state = load_file(str(folder / WEIGHTS_FILE))
        own = adapter.state_dict()
        bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
        if bad:
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: weights do not match the adapter config "
                                  f"(keys {bad[:4]})")
        adapter.load_state_dict(state)
        return adapter
