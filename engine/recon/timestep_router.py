"""Soft routing over a Mixture-of-Experts encoder's levels as a function of the diffusion timestep (MoRE-Brain).

A hierarchical MoE encoder predicts one embedding per level (``EncoderOutput.extras["levels"]``, shape
``(n_levels, batch, *target_shape)``; level 0 has the fewest, coarsest experts). The generator is conditioned on the
mix ``sum_l w_l(t) * level_l``, with weights that depend on the timestep ``t``:

``w(t) = softmax_l( q(t) · k_l / sqrt(d) + c_l * (t / T - 0.5) )``

``q(t)`` is a Linear of the sinusoidal embedding of ``t``, ``k_l`` learned level keys (MoRE-Brain's time router), and
``c_l`` a learned slope per level initialised from +2 (coarsest) to -2 (finest), so that training starts from the
coarse-to-fine prior: coarse levels early in sampling (large ``t``), fine ones late. Everything is learned during
fine-tuning (the slopes at their own learning rate, ``FinetuneConfig.router_lr``). ``weights_per_step(timesteps)``
gives the ``(n_steps, n_levels)`` table the GUI's expert views plot, ``prior_weights_per_step`` the prior's, to plot
the learned weights against.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import CheckpointError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.models.construction import MODEL_BUILD_LOCK


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(batch, dim)`` of timesteps ``(batch,)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepRouter(nn.Module):
    """Learned soft weights over ``n_levels`` expert levels as a function of the diffusion timestep.

    Parameters
    ----------
    n_levels : int
    dim : int
        Width of the time query and level keys.
    num_train_timesteps : int
        ``T`` of the noise schedule (1000 for SD and the demo generator).
    """

    def __init__(self, n_levels: int, dim: int = 64, num_train_timesteps: int = 1000) -> None:
        super().__init__()
        self.n_levels = int(n_levels)
        self.dim = int(dim)
        self.num_train_timesteps = int(num_train_timesteps)
        self.query = nn.Linear(dim, dim)
        self.keys = nn.Parameter(torch.randn(n_levels, dim) * 0.02)
        self.slope = nn.Parameter(self.prior_slopes())

    def prior_slopes(self) -> torch.Tensor:
        """The initial slopes: +2 (coarsest level) to -2 (finest), the coarse-to-fine prior."""
        return torch.linspace(2.0, -2.0, self.n_levels) if self.n_levels > 1 else torch.zeros(1)

    def prior_weights_per_step(self, timesteps) -> np.ndarray:
        """``(n_steps, n_levels)`` weights of the prior alone (the slopes' term, no learned query): what training
        started from, for plotting next to ``weights_per_step``."""
        t = torch.as_tensor(np.asarray(timesteps), dtype=torch.float32).reshape(-1)
        logits = self.prior_slopes()[None] * (t[:, None] / self.num_train_timesteps - 0.5)
        return torch.softmax(logits, dim=-1).cpu().numpy()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Weights ``(batch, n_levels)`` (rows sum to 1) for timesteps ``t`` ``(batch,)``."""
        t = t.reshape(-1).to(self.keys.device)
        q = self.query(timestep_embedding(t, self.dim))
        logits = q @ self.keys.t() / math.sqrt(self.dim)
        logits = logits + self.slope[None] * (t.float()[:, None] / self.num_train_timesteps - 0.5)
        return torch.softmax(logits, dim=-1)

    def mix(self, levels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mix per-level embeddings ``(n_levels, batch, *shape)`` with per-sample timesteps ``(batch,)`` or one
        timestep (scalar): returns ``(batch, *shape)``."""
        batch = levels.shape[1]
        t = t.reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        w = self(t).to(levels.dtype)  # (batch, n_levels)
        w = w.t().reshape(self.n_levels, batch, *([1] * (levels.ndim - 2)))
        return (w * levels).sum(0)

    def weights_per_step(self, timesteps) -> np.ndarray:
        """``(n_steps, n_levels)`` weights for a sampling schedule's timesteps (for the expert views)."""
        with torch.no_grad():
            return self(torch.as_tensor(np.asarray(timesteps), dtype=torch.float32)).cpu().numpy()

    def save(self, folder: str | Path) -> Path:
        from engine.atomic import atomic_dir, atomic_save_safetensors

        with atomic_dir(folder, overwrite=True) as tmp:
            (tmp / "config.json").write_text(json.dumps(
                {"class": "TimestepRouter", "n_levels": self.n_levels, "dim": self.dim,
                 "num_train_timesteps": self.num_train_timesteps}, indent=2) + "\n")
            atomic_save_safetensors(tmp / "model.safetensors", self.state_dict())
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "TimestepRouter":
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            meta = read_object(folder / "config.json")
            with MODEL_BUILD_LOCK:  # see engine/models/construction.py
                router = cls(meta["n_levels"], meta["dim"], meta["num_train_timesteps"])
            router.load_state_dict(load_file(str(folder / "model.safetensors")))
        except (OSError, KeyError, RuntimeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{folder}: not a timestep router folder ({type(e).__name__}: {e})") from None
        return router
