"""Masked brain modelling (MinD-Vis SC-MBM): a masked autoencoder over patches of voxels, then an encoder for decoding.

Patching: betas (batch, n_voxels) are wrap-padded to a multiple of ``patch_size`` (the first voxels repeat at the end)
and cut into ``n_patches = ceil(n_voxels / patch_size)`` patches by a Conv1d(1 → dim, kernel = stride = patch_size).
Fixed 1-D sin-cos positions are added (the CLS token gets position zeros, as in MAE), a CLS token is prepended, and a
pre-norm transformer encoder runs over the tokens.

Pre-training (``pretrain_loss``): a random ``mask_ratio`` of the patches is hidden per sample; the encoder sees the
rest; a lighter transformer decoder fills mask tokens back in and predicts every patch's voxels; the loss is the MSE on
the masked patches only. It needs no images, so it runs on a subject's unpaired fMRI.

Fine-tuning / decoding (``forward``): the unmasked encoder's patch tokens (batch, n_patches, dim) go through the
subject's token mapper, Conv1d(n_patches → n_patches/2 → T) as in MinD-Vis's conditioning path, then Linear(dim → D)
to the target tokens (batch, T, D); a pooled target (D,) uses T = 1. The mapper depends on the subject's patch count,
so it is the per-subject module (``subject_layers[name]``, what ``input_only`` trains); the patch embedding and
transformer are shared, since sin-cos positions work for any patch count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from engine.config import check
from engine.models.base import BrainEncoder, EncoderOutput, RetrievalProjector
from engine.models.config import ModelConfig


@dataclass(frozen=True)
class MBMConfig(ModelConfig):
    """Settings of ``MBMEncoder`` (defaults: a small model; MinD-Vis uses dim 1024, depth 24, 16 heads,
    decoder 512 × 8, patch 16, mask ratio 0.75).

    Attributes
    ----------
    patch_size : int
        Voxels per patch (16).
    dim, depth, heads : int
        Encoder width, number of transformer blocks and attention heads (``dim % heads == 0``).
    mlp_ratio : float
        Transformer feed-forward width / dim (MinD-Vis: 1.0).
    decoder_dim, decoder_depth, decoder_heads : int
        MAE decoder (pre-training only).
    mask_ratio : float
        Share of patches hidden during pre-training (0.75).
    dropout : float
        Dropout inside the transformer blocks.
    retrieval : bool
        Build the retrieval projector.
    projector_hidden : int
        Projector width; 0 means the embedding's last dimension.
    """

    patch_size: int = 16
    dim: int = 256
    depth: int = 4
    heads: int = 8
    mlp_ratio: float = 1.0
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mask_ratio: float = 0.75
    dropout: float = 0.0
    retrieval: bool = True
    projector_hidden: int = 0

    def validate(self) -> None:
        name = type(self).__name__
        for key in ("patch_size", "dim", "depth", "heads", "decoder_dim", "decoder_depth", "decoder_heads"):
            check(getattr(self, key) > 0, name, key, "a positive integer", getattr(self, key))
        check(self.dim % self.heads == 0, name, "heads", f"a divisor of dim={self.dim}", self.heads)
        check(self.decoder_dim % self.decoder_heads == 0, name, "decoder_heads",
              f"a divisor of decoder_dim={self.decoder_dim}", self.decoder_heads)
        check(self.dim % 2 == 0 and self.decoder_dim % 2 == 0, name, "dim",
              "even dim and decoder_dim (sin-cos positions)", (self.dim, self.decoder_dim))
        check(self.mlp_ratio > 0, name, "mlp_ratio", "a number > 0", self.mlp_ratio)
        check(0.0 < self.mask_ratio < 1.0, name, "mask_ratio", "a number in (0, 1)", self.mask_ratio)
        check(0.0 <= self.dropout < 1.0, name, "dropout", "a number in [0, 1)", self.dropout)
        check(self.projector_hidden >= 0, name, "projector_hidden", "an integer >= 0", self.projector_hidden)


def sincos_positions(n_positions: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """MAE's fixed 1-D sin-cos embedding for positions 0…n−1, shape (n_positions, dim): [sin | cos]."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=device) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    pos = torch.arange(n_positions, dtype=torch.float64, device=device)
    out = pos[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1).to(dtype)


def wrap_pad(betas: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Pad (batch, n_voxels) to a multiple of ``patch_size`` by repeating the first voxels (numpy 'wrap' mode)."""
    n = betas.shape[1]
    pad = (-n) % patch_size
    if pad == 0:
        return betas
    reps = math.ceil(pad / n)
    extra = betas.repeat(1, reps)[:, :pad] if reps > 1 else betas[:, :pad]
    return torch.cat([betas, extra], dim=1)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TokenMapper(nn.Module):
    """MinD-Vis conditioning path for one subject: Conv1d(n_patches → n_patches/2 → n_tokens, kernel 1) over the
    token axis: (batch, n_patches, dim) → (batch, n_tokens, dim)."""

    def __init__(self, n_patches: int, n_tokens: int) -> None:
        super().__init__()
        mid = max(1, n_patches // 2)
        self.conv1 = nn.Conv1d(n_patches, mid, 1)
        self.conv2 = nn.Conv1d(mid, n_tokens, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked patches of the per-patch MSE (visible patches do not count)."""
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MBMEncoder(BrainEncoder):
    """MinD-Vis SC-MBM masked autoencoder and decoder-side encoder; see the module docstring and ``MBMConfig``."""

    config_class = MBMConfig
    kind = "mbm"

    def __init__(self, config: MBMConfig, *, n_voxels, target_shape) -> None:
        super().__init__(config, n_voxels=n_voxels, target_shape=target_shape)
        c = self.config
        self.patch_embed = nn.Conv1d(1, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.blocks = nn.ModuleList([Block(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.dim)
        # MAE decoder (pre-training).
        self.decoder_embed = nn.Linear(c.dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.decoder_blocks = nn.ModuleList([Block(c.decoder_dim, c.decoder_heads, c.mlp_ratio, c.dropout)
                                             for _ in range(c.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(c.decoder_dim)
        self.decoder_pred = nn.Linear(c.decoder_dim, c.patch_size)
        # Decoding head (fine-tuning).
        self.n_tokens = self.target_shape[0] if len(self.target_shape) == 2 else 1
        self.head = nn.Linear(c.dim, self.target_shape[-1])
        d = self.target_shape[-1]
        self.projector = RetrievalProjector(d, c.projector_hidden or d) if c.retrieval else None
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self._init_subjects()

    @property
    def caption_features(self) -> int:
        return self.config.dim  # the caption head reads the mean of the encoder's patch tokens

    def n_patches(self, n_voxels: int) -> int:
        return math.ceil(n_voxels / self.config.patch_size)

    def _build_subject(self, n_voxels: int) -> nn.Module:
        return TokenMapper(self.n_patches(n_voxels), self.n_tokens)

    # ---- encoder ----------------------------------------------------------------------------------------------------

    def patchify(self, betas: torch.Tensor) -> torch.Tensor:
        """(batch, n_voxels) → wrap-padded patches (batch, n_patches, patch_size): the reconstruction targets."""
        x = wrap_pad(betas, self.config.patch_size)
        return x.reshape(x.shape[0], -1, self.config.patch_size)

    def _embed(self, betas: torch.Tensor) -> torch.Tensor:
        x = wrap_pad(betas, self.config.patch_size).unsqueeze(1)
        x = self.patch_embed(x).transpose(1, 2)  # (batch, n_patches, dim)
        return x + sincos_positions(x.shape[1], self.config.dim, device=x.device, dtype=x.dtype)

    def _encode(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # CLS position is all zeros (MAE)
        x = torch.cat([cls, tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def encode(self, betas: torch.Tensor, subject: str | None = None) -> torch.Tensor:
        """All tokens of the unmasked encoder, (batch, 1 + n_patches, dim); index 0 is CLS."""
        betas, _ = self._check_betas(betas, subject)
        return self._encode(self._embed(betas))

    def forward(self, betas: torch.Tensor, subject: str | None = None, *, pretrain: bool = False,
                mask_ratio: float | None = None, generator: torch.Generator | None = None) -> EncoderOutput:
        """Encode betas (batch, n_voxels): patch tokens → subject's token mapper → Linear → (batch, *target_shape).

        With ``pretrain=True`` run the masked autoencoder instead (so a DDP-wrapped model pre-trains through its
        ``forward``): ``embedding`` is the predicted patches (batch, n_patches, patch_size), ``aux_losses["mae"]`` the
        masked-patch MSE, ``extras`` holds ``"target"`` patches and ``"mask"`` (batch, n_patches).
        """
        if pretrain:
            pred, target, mask = self.mae_forward(betas, subject, mask_ratio=mask_ratio, generator=generator)
            return EncoderOutput(embedding=pred, retrieval=None, aux_losses={"mae": _masked_mse(pred, target, mask)},
                                 extras={"target": target, "mask": mask})
        betas, name = self._check_betas(betas, subject)
        tokens = self._encode(self._embed(betas))[:, 1:]
        mapped = self.head(self.subject_layer(name)(tokens))  # (batch, n_tokens, D)
        emb = mapped.reshape(betas.shape[0], *self.target_shape)
        retrieval = self.projector(emb).flatten(1) if self.projector is not None else None
        caption = self.caption(tokens.mean(dim=1)) if self.caption_head is not None else None
        return EncoderOutput(embedding=emb, retrieval=retrieval, extras={"tokens": tokens}, caption=caption)

    # ---- masked autoencoding ----------------------------------------------------------------------------------------

    def mae_forward(self, betas: torch.Tensor, subject: str | None = None, *, mask_ratio: float | None = None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masked autoencoding pass.

        Returns
        -------
        pred : Tensor, shape (batch, n_patches, patch_size)
            Predicted voxels of every patch.
        target : Tensor, shape (batch, n_patches, patch_size)
            The wrap-padded input patches.
        mask : Tensor, shape (batch, n_patches)
            1 for hidden patches, 0 for visible ones.
        """
        betas, _ = self._check_betas(betas, subject)
        ratio = self.config.mask_ratio if mask_ratio is None else float(mask_ratio)
        tokens = self._embed(betas)
        b, n, d = tokens.shape
        n_keep = max(1, int(round(n * (1 - ratio))))
        noise = torch.rand(b, n, generator=generator).to(tokens.device)
        shuffle = noise.argsort(dim=1)
        restore = shuffle.argsort(dim=1)
        keep = shuffle[:, :n_keep]
        visible = tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, d))
        latent = self._encode(visible)
        # Decoder: visible tokens plus mask tokens, back in the original order, with their own positions.
        x = self.decoder_embed(latent)
        mask_tokens = self.mask_token.expand(b, n - n_keep, -1)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
        x_ = x_.gather(1, restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1)
        pos = sincos_positions(n, self.config.decoder_dim, device=x.device, dtype=x.dtype)
        x = x + torch.cat([torch.zeros_like(pos[:1]), pos])  # CLS position is zeros (MAE)
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        mask = torch.ones(b, n, device=tokens.device, dtype=tokens.dtype)
        mask[:, :n_keep] = 0
        mask = mask.gather(1, restore)
        return pred, self.patchify(betas), mask

    def pretrain_loss(self, betas: torch.Tensor, subject: str | None = None, *, mask_ratio: float | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE on the masked patches only (MinD-Vis SC-MBM), for unpaired pre-training on a subject's fMRI."""
        pred, target, mask = self.mae_forward(betas, subject, mask_ratio=mask_ratio, generator=generator)
        return _masked_mse(pred, target, mask)

    def pretrain_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters that pre-training updates (patch embedding, encoder, MAE decoder); heads and mappers are idle."""
        idle = ("head.", "projector.", "subject_layers.")
        return {k: p for k, p in self.named_parameters() if not k.startswith(idle)}
