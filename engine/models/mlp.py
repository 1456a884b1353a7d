"""MindEyeV2-style MLP encoder: per-subject linear input layer → shared residual MLP → embedding and retrieval heads.

Shapes: betas (batch, n_voxels) → input layer (batch, hidden) → ``n_blocks`` residual blocks (batch, hidden) →
embedding head (batch, *target_shape) → retrieval projector (per token, LN-GELU-Linear × 3) flattened to
(batch, prod(target_shape)). The optional low-level "blurry" head predicts a small image or VAE latent
``blurry_shape = (C, H, W)`` (MindEyeV2: Linear → Dropout 0.3 → GroupNorm → upsampling conv decoder); the
reconstruction stage uses it as an img2img start.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.config import check
from engine.models.base import BrainEncoder, EncoderOutput, ResidualBlock, RetrievalProjector
from engine.models.config import ModelConfig


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """Settings of ``MLPEncoder`` (defaults: a small MindEyeV2 "lite"; MindEyeV2 itself uses hidden 4096).

    Attributes
    ----------
    hidden : int
        Width of the input layer output and of the residual MLP (MindEyeV2: 4096; lite: 1024).
    n_blocks : int
        Residual blocks (4).
    dropout : float
        Dropout inside each block (0.15).
    retrieval : bool
        Build the retrieval projector (``EncoderOutput.retrieval``).
    projector_hidden : int
        Width of the projector; 0 means the embedding's last dimension D (MindEyeV2).
    blurry : bool
        Build the low-level head (``EncoderOutput.extras["blurry"]``).
    blurry_shape : (C, H, W)
        What the low-level head predicts, e.g. (3, 16, 16) for a small image or (4, 28, 28) for an SD-VAE latent.
    blurry_channels : int
        Channels of the low-level decoder's first feature map (MindEyeV2: 64).
    blurry_upsamples : int
        Number of ×2 upsampling blocks; H and W must be divisible by 2**blurry_upsamples.
    blurry_dropout : float
        Dropout after the low-level head's linear layer (0.3).
    """

    hidden: int = 1024
    n_blocks: int = 4
    dropout: float = 0.15
    retrieval: bool = True
    projector_hidden: int = 0
    blurry: bool = False
    blurry_shape: tuple[int, int, int] = (3, 16, 16)
    blurry_channels: int = 64
    blurry_upsamples: int = 2
    blurry_dropout: float = 0.3

    def validate(self) -> None:
        name = type(self).__name__
        check(self.hidden > 0, name, "hidden", "a positive integer", self.hidden)
        check(self.n_blocks >= 0, name, "n_blocks", "an integer >= 0", self.n_blocks)
        check(0.0 <= self.dropout < 1.0, name, "dropout", "a number in [0, 1)", self.dropout)
        check(self.projector_hidden >= 0, name, "projector_hidden", "an integer >= 0", self.projector_hidden)
        check(0.0 <= self.blurry_dropout < 1.0, name, "blurry_dropout", "a number in [0, 1)", self.blurry_dropout)
        check(all(s > 0 for s in self.blurry_shape), name, "blurry_shape", "(C, H, W) positive", self.blurry_shape)
        check(self.blurry_channels > 0, name, "blurry_channels", "a positive integer", self.blurry_channels)
        check(self.blurry_upsamples >= 0, name, "blurry_upsamples", "an integer >= 0", self.blurry_upsamples)
        f = 2 ** self.blurry_upsamples
        check(self.blurry_shape[1] % f == 0 and self.blurry_shape[2] % f == 0, name, "blurry_shape",
              f"H and W divisible by 2**blurry_upsamples = {f}", self.blurry_shape)


class BlurryHead(nn.Module):
    """Low-level head: Linear → Dropout → (channels, H/f, W/f) → GroupNorm → [Upsample ×2 → Conv → GN → SiLU] × n
    → Conv 3×3 to ``C`` channels. Output (batch, C, H, W)."""

    def __init__(self, hidden: int, shape: tuple[int, int, int], channels: int, upsamples: int,
                 dropout: float) -> None:
        super().__init__()
        c, h, w = shape
        f = 2 ** upsamples
        self.start = (channels, h // f, w // f)
        self.linear = nn.Linear(hidden, channels * (h // f) * (w // f))
        self.dropout = nn.Dropout(dropout)
        groups = _groups(channels)
        self.norm = nn.GroupNorm(groups, channels)
        ups = []
        for _ in range(upsamples):
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1),
                    nn.GroupNorm(groups, channels), nn.SiLU()]
        self.up = nn.Sequential(*ups)
        self.out = nn.Conv2d(channels, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.linear(x)).reshape(x.shape[0], *self.start)
        return self.out(self.up(self.norm(x)))


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels >= 2 * g:
            return g
    return 1


class MLPEncoder(BrainEncoder):
    """MindEyeV2 backbone. See the module docstring for shapes; ``MLPConfig`` for settings.

    The per-subject input layer (``subject_layers[name]``, a ``Linear(n_voxels, hidden)``) is MindEyeV2's "ridge";
    its L2 penalty comes from the optimizer's weight decay.
    """

    config_class = MLPConfig
    kind = "mlp"

    def __init__(self, config: MLPConfig, *, n_voxels, target_shape) -> None:
        super().__init__(config, n_voxels=n_voxels, target_shape=target_shape)
        c = self.config
        self.backbone = nn.Sequential(*[ResidualBlock(c.hidden, c.dropout) for _ in range(c.n_blocks)])
        self.head = nn.Linear(c.hidden, self.embed_dim)
        d = self.target_shape[-1]
        self.projector = RetrievalProjector(d, c.projector_hidden or d) if c.retrieval else None
        self.blurry = (BlurryHead(c.hidden, c.blurry_shape, c.blurry_channels, c.blurry_upsamples, c.blurry_dropout)
                       if c.blurry else None)
        self._init_subjects()

    def _build_subject(self, n_voxels: int) -> nn.Module:
        return nn.Linear(n_voxels, self.config.hidden)

    @property
    def caption_features(self) -> int:
        return self.config.hidden  # the caption head reads the backbone output

    def features(self, betas: torch.Tensor, subject: str | None = None) -> torch.Tensor:
        """Backbone output (batch, hidden)."""
        betas, name = self._check_betas(betas, subject)
        return self.backbone(self.subject_layer(name)(betas))

    def forward(self, betas: torch.Tensor, subject: str | None = None) -> EncoderOutput:
        """Encode betas (batch, n_voxels) of one subject; see ``EncoderOutput``."""
        h = self.features(betas, subject)
        emb = self.head(h).reshape(h.shape[0], *self.target_shape)
        retrieval = self.projector(emb).flatten(1) if self.projector is not None else None
        extras = {"blurry": self.blurry(h)} if self.blurry is not None else {}
        return EncoderOutput(embedding=emb, retrieval=retrieval, extras=extras, caption=self.caption(h))
