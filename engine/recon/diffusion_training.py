"""Pieces shared by the diffusion trainings (the demo generator's build, a generator trained on the user's images,
decoder fine-tuning): pixel ↔ tensor conversions, min-SNR-γ weights, the optimiser + EMA step, the spatial map's
regression, the warm-up + cosine learning rate, the seeded generator of each step's batch."""

from __future__ import annotations

import math

import numpy as np


def images_to_tensor(images_u8: np.ndarray):
    """uint8 ``(N, H, W, 3)`` → float ``(N, 3, H, W)`` in [-1, 1] (the VAE's input range)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def tensor_to_images(x) -> np.ndarray:
    """float ``(N, 3, H, W)`` in [-1, 1] → uint8 ``(N, H, W, 3)``."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=__import__("torch").uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def min_snr_weights(scheduler, timesteps, gamma: float):
    """Min-SNR-γ loss weights for ε-prediction: ``min(SNR, γ) / SNR`` (Hang et al. 2023)."""
    import torch

    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    return torch.minimum(snr, torch.full_like(snr, gamma)) / snr


def update_with_ema(opt, params, loss, ema, step: int, ema_decay: float) -> None:
    """One optimiser step on ``loss`` (gradients clipped to norm 1), then the EMA of ``params`` with the usual
    warm-up of its decay (``min(ema_decay, (1 + step) / (10 + step))``). Shared by the diffusion builds."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
        decay = min(ema_decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)


def spatial_regression(spatial, latents):
    """MSE of the spatial condition's channels onto the clean latents' first channels (as many as both have)."""
    c = min(spatial.shape[1], latents.shape[1])
    return ((spatial[:, :c] - latents[:, :c]) ** 2).mean()


def warmup_cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def step_generator(seed: int, stream: int, step: int):
    """A torch generator of its own for step ``step`` of ``stream`` (a UNet cycle, or a stage's own number), so a
    resumed build draws the same batches and noise as an uninterrupted one."""
    import torch

    return torch.Generator().manual_seed(int(seed) * 1_000_003 + stream * 100_003 + step)
