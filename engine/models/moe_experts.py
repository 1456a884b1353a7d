"""A level of MoE experts, batched over its experts (grouped Linear, LayerNorm and residual blocks), with its routers
and output heads. See ``engine.models.moe``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.losses import batch_mean, batch_sum, load_balance_loss, switch_balance_loss
from engine.models.moe_dispatch import UnitRouter, dispatch_mask


class GroupedLinear(nn.Module):
    """``n`` independent Linear layers applied at once: x (batch, n, d_in) → (batch, n, d_out)."""

    def __init__(self, n: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bni,nio->bno", x, self.weight) + self.bias


class GroupedLayerNorm(nn.Module):
    """LayerNorm over the last axis with one affine pair per expert: x (batch, n, d)."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, d))
        self.bias = nn.Parameter(torch.zeros(n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class GroupedResidualBlock(nn.Module):
    """The MindEyeV2 residual block, one per expert: x + Linear(Dropout(GELU(Linear(LN(x)))))."""

    def __init__(self, n: int, d: int, dropout: float) -> None:
        super().__init__()
        self.norm = GroupedLayerNorm(n, d)
        self.fc1 = GroupedLinear(n, d, d)
        self.fc2 = GroupedLinear(n, d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(F.gelu(self.fc1(self.norm(x)))))


class ExpertLevel(nn.Module):
    """One level: a router per parent, the level's experts and their output heads.

    Parameters
    ----------
    n_parents, units_per_parent : int
        The level routes ``units_per_parent`` units of each of ``n_parents`` inputs (1 parent: the input layer).
    children : int
        Experts per parent; the level has ``n_parents × children`` experts, expert ``p·children + j`` belongs to
        parent ``p``.
    width : int
        Hidden width of each expert.
    n_blocks : int or None
        Residual blocks per expert; ``None`` makes each expert a single Linear (MoRE-Brain's child experts).
    config : MoEConfig
        Routing, capacity, noise, balance and dropout settings.
    """

    def __init__(self, n_parents: int, units_per_parent: int, children: int, width: int, n_blocks: int | None,
                 out_dim: int, config) -> None:
        super().__init__()
        self.n_parents, self.units, self.n_children = n_parents, units_per_parent, children
        self.n_experts = n_parents * children
        self.width = width
        self.routing, self.capacity_factor, self.top_k = config.routing, config.capacity_factor, config.top_k
        self.noise, self.balance = config.router_noise, config.balance
        self.router = UnitRouter(n_parents, units_per_parent, children, init=config.router_init,
                                 unit_bias=config.router_unit_bias)
        self.inp = GroupedLinear(self.n_experts, units_per_parent, width)
        blocks = n_blocks or 0
        self.blocks = nn.Sequential(*[GroupedResidualBlock(self.n_experts, width, config.dropout)
                                      for _ in range(blocks)])
        self.head = GroupedLinear(self.n_experts, width, out_dim)

    def forward(self, x: torch.Tensor) -> dict:
        """x (batch, n_parents, units) → dict with ``out`` (batch, out_dim) summed over experts, ``expert_out``
        (batch, n_experts, out_dim), ``hidden``
        (batch, n_experts, width), ``weights`` (batch, n_parents, units, children), ``probs``, ``mask``, ``lb``."""
        probs = self.router(x)
        if self.training and self.noise > 0:
            # Drawn on the CPU, then moved: the same noise on every device for the same seed.
            probs = probs + torch.randn(probs.shape).to(probs.device, probs.dtype) * self.noise
        mask = dispatch_mask(probs.detach(), self.routing, self.capacity_factor, self.top_k)
        weights = probs * mask
        b = x.shape[0]
        # (batch, parents, units, children) → (batch, experts, units): expert p·children + j sees parent p's units.
        inp = (x.unsqueeze(-1) * weights).permute(0, 1, 3, 2).reshape(b, self.n_experts, self.units)
        hidden = self.blocks(self.inp(inp))
        expert_out = self.head(hidden)  # (batch, experts, out_dim)
        out = expert_out.sum(dim=1)
        mean_prob = batch_mean(probs, dim=(0, 2))  # (parents, children), over every process's rows when distributed
        if self.balance == "mse":
            lb = load_balance_loss(mean_prob)
        else:
            counts = batch_sum(mask.float(), dim=(0, 2))
            lb = switch_balance_loss(counts / counts.sum(-1, keepdim=True).clamp_min(1e-9), mean_prob)
        return {"out": out, "expert_out": expert_out, "hidden": hidden, "weights": weights, "probs": probs,
                "mask": mask, "lb": lb}
