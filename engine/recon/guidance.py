"""Classifier-free guidance with ONE learned null condition, used identically in training and at sampling.

Training drops the condition of each sample with probability ``drop_prob`` (0.1 by default) by replacing its
conditioning tokens with the learned null tokens; sampling uses the very same null tokens as the unconditional branch.
(Upstream NeuroLens zeroes the encoder output in training but encodes an all-zero scan at inference; here there is one
null condition, owned by the conditioning adapter, so the two can never differ.)

Guidance: ``eps = eps_null + scale * (eps_cond - eps_null)``; ``scale = 0`` is unconditional sampling, ``scale = 1``
conditional sampling without guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.config import Config


@dataclass(frozen=True)
class GuidanceConfig(Config):
    """Classifier-free guidance settings.

    Parameters
    ----------
    scale : float
        Guidance scale ``s`` (0: unconditional, 1: conditional, > 1: guided).
    drop_prob : float
        Probability, per training sample, of replacing the condition by the null condition.
    """

    scale: float = 3.0
    drop_prob: float = 0.1


class NullCondition(nn.Module):
    """The learned unconditional input: ``n_tokens`` context tokens (and a pooled vector for SDXL-type UNets).

    Parameters
    ----------
    n_tokens, dim : int
        Shape of the token condition ``(n_tokens, dim)``.
    pooled_dim : int, optional
        Length of the pooled condition (SDXL ``text_embeds``); None when the generator has none.
    image_embed_dim : int, optional
        Length of the IP-Adapter image embedding; None without an IP-Adapter.
    """

    def __init__(self, n_tokens: int, dim: int, pooled_dim: int | None = None,
                 image_embed_dim: int | None = None) -> None:
        super().__init__()
        # Small random init (not zeros) so the null tokens carry no special meaning before training.
        self.tokens = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.pooled = nn.Parameter(torch.zeros(pooled_dim)) if pooled_dim else None
        # IP-Adapter's own unconditional input is a zero image embedding: start there, then learn it.
        self.image_embeds = nn.Parameter(torch.zeros(image_embed_dim)) if image_embed_dim else None

    def expand(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Null tokens ``(batch, n_tokens, dim)`` and pooled ``(batch, pooled_dim)`` or None."""
        tokens = self.tokens.unsqueeze(0).expand(batch, -1, -1)
        pooled = None if self.pooled is None else self.pooled.unsqueeze(0).expand(batch, -1)
        return tokens, pooled

    def expand_image(self, batch: int) -> torch.Tensor | None:
        """Null IP-Adapter image embeddings ``(batch, image_embed_dim)``, or None."""
        return None if self.image_embeds is None else self.image_embeds.unsqueeze(0).expand(batch, -1)


def drop_mask(batch: int, drop_prob: float, *, generator: torch.Generator | None = None,
              device=None) -> torch.Tensor:
    """Boolean ``(batch,)`` on ``device``: True where the condition is replaced by the null condition in this step.

    Drawn on the CPU from ``generator`` (a CPU generator) and then moved: the same mask on every device.
    """
    if drop_prob <= 0:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return (torch.rand(batch, generator=generator) < drop_prob).to(device)


def apply_drop(tokens: torch.Tensor, pooled: torch.Tensor | None, null: NullCondition,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Replace the condition of the samples in ``mask`` by the null condition (keeps gradients to both)."""
    null_tokens, null_pooled = null.expand(tokens.shape[0])
    m = mask.view(-1, 1, 1).to(tokens.device)
    tokens = torch.where(m, null_tokens.to(tokens.dtype), tokens)
    if pooled is not None and null_pooled is not None:
        pooled = torch.where(mask.view(-1, 1).to(pooled.device), null_pooled.to(pooled.dtype), pooled)
    return tokens, pooled


def combine(eps_null: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps_null + scale * (eps_cond - eps_null)``."""
    return eps_null + scale * (eps_cond - eps_null)
