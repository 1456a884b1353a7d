"""How a MoE level dispatches units to experts: the router (probabilities over experts from a unit's value and,
optionally, its identity), the capacity of an expert and the dispatch rule (expert choice, token choice).

See ``engine.models.moe`` for the encoder these serve."""

from __future__ import annotations

import math

import torch
from torch import nn


def expert_capacity(n_units: int, n_experts: int, routing: str, capacity_factor: float, top_k: int = 1) -> int:
    """Units one expert takes: expert choice ``int(n_units / E × cf)``; token choice ``ceil(cf × n_units × k / E)``;
    at least 1 and at most ``n_units``."""
    if routing == "expert_choice":
        k = int(n_units / n_experts * capacity_factor)
    else:
        k = math.ceil(capacity_factor * n_units * min(top_k, n_experts) / n_experts)
    return max(1, min(n_units, k))


def dispatch_mask(probs: torch.Tensor, routing: str, capacity_factor: float, top_k: int = 1) -> torch.Tensor:
    """Which units go to which expert.

    Parameters
    ----------
    probs : Tensor, shape (..., n_units, n_experts)
        Routing probabilities.
    routing : {"expert_choice", "token_choice"}

    Returns
    -------
    Tensor of bool, shape (..., n_units, n_experts)
    """
    n_units, n_experts = probs.shape[-2], probs.shape[-1]
    cap = expert_capacity(n_units, n_experts, routing, capacity_factor, top_k)
    if routing == "expert_choice":
        idx = probs.topk(cap, dim=-2).indices
        return torch.zeros_like(probs, dtype=torch.bool).scatter_(-2, idx, True)
    k = min(top_k, n_experts)
    chosen = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, probs.topk(k, dim=-1).indices, True)
    # Units that did not pick an expert score -1 so an expert's capacity goes to its highest-probability choosers.
    score = torch.where(chosen, probs, torch.full_like(probs, -1.0))
    keep = torch.zeros_like(chosen).scatter_(-2, score.topk(cap, dim=-2).indices, True)
    return chosen & keep


class UnitRouter(nn.Module):
    """Routes ``n_units`` scalar tokens among ``n_experts``, independently for ``n_groups`` parents.

    logits[b, g, u, e] = x[b, g, u] · w[g, e] (+ bias[g, u, e]); probabilities = softmax over e.
    """

    def __init__(self, n_groups: int, n_units: int, n_experts: int, *, init: float, unit_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_groups, n_experts).uniform_(-init, init))
        self.unit_bias = nn.Parameter(torch.zeros(n_groups, n_units, n_experts)) if unit_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, n_groups, n_units) → probabilities (batch, n_groups, n_units, n_experts)."""
        logits = x.unsqueeze(-1) * self.weight[:, None, :]
        if self.unit_bias is not None:
            logits = logits + self.unit_bias
        return logits.softmax(dim=-1)
