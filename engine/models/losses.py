"""Losses of the brain encoders: contrastive (InfoNCE, SoftCLIP, BiMixCo), cosine, MSE, load balancing.

Contrastive losses compare a batch of predictions with the batch of targets: both are flattened per sample and
L2-normalised, logits are ``pred · targetᵀ / τ``, and the loss is a cross-entropy in both directions (brain → image and
image → brain), averaged. MindEyeV2 trains with BiMixCo (voxel mixup, τ = 0.006) for the first third of the epochs,
then SoftCLIP with τ cosine-annealed from 0.004 to 0.0075.

With several processes the trainer passes the global batch (gathered, see ``engine.train.distributed``) to these
losses; batch statistics computed inside a model's forward (MoE routing) use ``batch_mean`` / ``batch_sum``, which
cover every process's rows inside ``global_batch``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from engine.config import check
from engine.models.config import ModelConfig


_PROCESS_SUM: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("process_sum", default=None)


@contextlib.contextmanager
def global_batch(process_sum: Callable[[torch.Tensor], torch.Tensor]):
    """Inside, ``batch_mean`` and ``batch_sum`` cover the global batch: ``process_sum`` sums a tensor over processes
    (differentiably, e.g. ``Distributed.sum_over_processes``)."""
    token = _PROCESS_SUM.set(process_sum)
    try:
        yield
    finally:
        _PROCESS_SUM.reset(token)


def batch_sum(x: torch.Tensor, dim: tuple[int, ...]) -> torch.Tensor:
    """``x.sum(dim)`` over this process's rows, or over every process's inside ``global_batch``."""
    total = x.sum(dim=dim)
    reduce = _PROCESS_SUM.get()
    return total if reduce is None else reduce(total)


def batch_mean(x: torch.Tensor, dim: tuple[int, ...]) -> torch.Tensor:
    """``x.mean(dim)`` over this process's rows, or over every process's inside ``global_batch`` (the row counts may
    differ between processes)."""
    reduce = _PROCESS_SUM.get()
    if reduce is None:
        return x.mean(dim=dim)
    count = torch.tensor(float(math.prod(x.shape[d] for d in dim)), device=x.device, dtype=x.dtype)
    return reduce(x.sum(dim=dim)) / reduce(count)


def _normed(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.flatten(1).float(), dim=-1)


def info_nce(pred: torch.Tensor, target: torch.Tensor, temperature: float = 0.006) -> torch.Tensor:
    """CLIP-style bidirectional InfoNCE: trial i's prediction should pick target i among the batch.

    Parameters
    ----------
    pred, target : Tensor, shape (batch, ...)
        Flattened per sample and L2-normalised inside.
    temperature : float
    """
    logits = _normed(pred) @ _normed(target).T / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of −Σ_j soft_targets[i, j] · log_softmax(logits)[i, j]."""
    return -(logits.log_softmax(dim=-1) * soft_targets).sum(dim=-1).mean()


def soft_clip_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = 0.0075) -> torch.Tensor:
    """MindEyeV2's SoftCLIP: soft targets ``softmax(target·targetᵀ/τ)``, logits ``pred·targetᵀ/τ``, both directions.

    Near-duplicate images in a batch then share probability instead of being forced apart.
    """
    p, t = _normed(pred), _normed(target)
    soft = (t @ t.T / temperature).softmax(dim=-1)
    logits = p @ t.T / temperature
    return 0.5 * (soft_cross_entropy(logits, soft) + soft_cross_entropy(logits.T, soft))


@dataclass(frozen=True)
class MixcoBatch:
    """The result of ``mixco_batch``.

    Attributes
    ----------
    betas : Tensor, shape (batch, n_voxels)
        Mixed voxels: ``λ_i · x_i + (1 − λ_i) · x_perm[i]`` for selected rows, unchanged elsewhere.
    lam : Tensor, shape (batch,)
        Mixing weight of each row's own sample (1 for rows that were not mixed).
    perm : Tensor of int64, shape (batch,)
        The partner of each row.
    select : Tensor of bool, shape (batch,)
        Rows that were mixed.
    """

    betas: torch.Tensor
    lam: torch.Tensor
    perm: torch.Tensor
    select: torch.Tensor


def mixco_batch(betas: torch.Tensor, *, beta: float = 0.15, prob: float = 0.5,
                generator: torch.Generator | None = None) -> MixcoBatch:
    """Mix a fraction ``prob`` of the rows with a shuffled partner, λ ~ Beta(beta, beta) (MindEyeV2's ``mixco``).

    The input is not modified. Randomness comes from ``generator`` (CPU) so a run is reproducible.
    """
    n = betas.shape[0]
    dev = betas.device
    perm = torch.randperm(n, generator=generator).to(dev)
    # Beta(a, a) from two Gamma draws via the generator (torch.distributions ignores generators).
    u = _gamma(beta, n, generator)
    v = _gamma(beta, n, generator)
    lam = (u / (u + v).clamp_min(1e-12)).to(dev, dtype=betas.dtype)
    select = (torch.rand(n, generator=generator) <= prob).to(dev)
    lam = torch.where(select, lam, torch.ones_like(lam))
    shape = (-1,) + (1,) * (betas.ndim - 1)
    mixed = betas * lam.reshape(shape) + betas[perm] * (1 - lam).reshape(shape)
    return MixcoBatch(betas=mixed, lam=lam, perm=perm, select=select)


def _gamma(shape_param: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    # torch._standard_gamma takes no generator: draw Gamma(a) as Gamma(a + 1) · U^(1/a) with Marsaglia–Tsang for a+1.
    a = shape_param + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64)
    filled = 0
    while filled < n:
        m = 2 * (n - filled) + 8
        x = torch.randn(m, generator=generator, dtype=torch.float64)
        u = torch.rand(m, generator=generator, dtype=torch.float64)
        vv = (1 + c * x) ** 3
        ok = (vv > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * x ** 2 + d - d * vv + d * torch.log(vv.clamp_min(1e-300)))
        g = (d * vv)[ok][: n - filled]
        out[filled:filled + g.numel()] = g
        filled += g.numel()
    boost = torch.rand(n, generator=generator, dtype=torch.float64).clamp_min(1e-300) ** (1.0 / shape_param)
    return out * boost


def mixco_targets(lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Soft targets of BiMixCo, shape (batch, batch): row i puts λ_i on i and 1 − λ_i on perm[i].

    MindEyeV2 writes ``1 − λ`` over the diagonal when ``perm[i] == i``; here the two add, so every row sums to 1.
    """
    n = lam.shape[0]
    t = torch.diag(lam.float())
    t[torch.arange(n, device=lam.device), perm] += 1 - lam.float()
    return t


def bimixco_loss(pred: torch.Tensor, target: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor,
                 temperature: float = 0.006) -> torch.Tensor:
    """BiMixCo (MindEyeV2 ``mixco_nce``, bidirectional): contrastive loss with the mixup soft targets.

    ``pred`` comes from the mixed voxels of ``mixco_batch``; ``target`` is the unmixed batch of targets.
    """
    logits = _normed(pred) @ _normed(target).T / temperature
    soft = mixco_targets(lam, perm)
    return 0.5 * (soft_cross_entropy(logits, soft) + soft_cross_entropy(logits.T, soft.T))


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 − cos(pred_i, target_i), on flattened samples."""
    return (1 - F.cosine_similarity(pred.flatten(1).float(), target.flatten(1).float(), dim=-1)).mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every value."""
    return F.mse_loss(pred.float(), target.float())


def load_balance_loss(usage: torch.Tensor) -> torch.Tensor:
    """MSE between each expert's usage fraction and 1/E, averaged over any leading axes (e.g. parents).

    Parameters
    ----------
    usage : Tensor, shape (..., n_experts)
        Fractions that sum to 1 over the last axis. The loss is 0 exactly when usage is uniform.
    """
    e = usage.shape[-1]
    return ((usage - 1.0 / e) ** 2).mean()


def switch_balance_loss(dispatch_fraction: torch.Tensor, mean_prob: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer balancing term E · Σ_e f_e · P_e (1 at perfect balance), averaged over leading axes.

    ``dispatch_fraction`` f: share of units sent to each expert; ``mean_prob`` P: mean routing probability.
    """
    e = mean_prob.shape[-1]
    return (e * (dispatch_fraction * mean_prob).sum(dim=-1)).mean()


def cosine_anneal(start: float, end: float, progress: float) -> float:
    """Cosine interpolation from ``start`` (progress 0) to ``end`` (progress 1)."""
    p = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * p))


@dataclass(frozen=True)
class LossConfig(ModelConfig):
    """Weights and settings of the encoder training loss (defaults: MindEyeV2 without the diffusion prior).

    Attributes
    ----------
    contrastive : float
        Weight of the contrastive term on ``EncoderOutput.retrieval`` vs the flattened target.
    contrastive_kind : {"mindeye", "infonce", "softclip", "bimixco"}
        ``mindeye``: BiMixCo for the first ``mixco_fraction`` of training, SoftCLIP afterwards.
    mixco_fraction : float
        Share of training (by progress 0…1) that uses BiMixCo under ``mindeye`` (0.33).
    mixco_beta, mixco_prob : float
        λ ~ Beta(mixco_beta, mixco_beta) on a fraction ``mixco_prob`` of the batch (0.15, 0.5).
    mixco_temperature : float
        BiMixCo / InfoNCE temperature (0.006).
    softclip_temperature : (start, end)
        SoftCLIP temperature, cosine-annealed over the SoftCLIP phase (0.004 → 0.0075).
    mse, cosine : float
        Weights of MSE and 1 − cos between ``EncoderOutput.embedding`` and the target.
    blurry : float
        Weight of the L1 loss of ``extras["blurry"]`` against a low-level target (0.5).
    load_balance : float
        Weight of ``aux_losses["load_balance"]`` (MoE; 1.0).
    caption : float
        Weight of the caption head's loss (``EncoderOutput.caption`` vs the caption embedding; runs with
        ``data.caption_embedder`` only): the same contrastive kind as the image target plus MSE, unweighted inside
        (MoRE-Brain trains its text branch with the image recipe).
    """

    contrastive: float = 1.0
    contrastive_kind: Literal["mindeye", "infonce", "softclip", "bimixco"] = "mindeye"
    mixco_fraction: float = 0.33
    mixco_beta: float = 0.15
    mixco_prob: float = 0.5
    mixco_temperature: float = 0.006
    softclip_temperature: tuple[float, float] = (0.004, 0.0075)
    mse: float = 1.0
    cosine: float = 0.0
    blurry: float = 0.5
    load_balance: float = 1.0
    caption: float = 1.0

    def validate(self) -> None:
        name = type(self).__name__
        for key in ("contrastive", "mse", "cosine", "blurry", "load_balance", "caption"):
            check(getattr(self, key) >= 0, name, key, "a weight >= 0", getattr(self, key))
        check(self.contrastive_kind in ("mindeye", "infonce", "softclip", "bimixco"), name, "contrastive_kind",
              "one of mindeye, infonce, softclip, bimixco", self.contrastive_kind)
        check(0.0 <= self.mixco_fraction <= 1.0, name, "mixco_fraction", "a number in [0, 1]", self.mixco_fraction)
        check(self.mixco_beta > 0, name, "mixco_beta", "a number > 0", self.mixco_beta)
        check(0.0 <= self.mixco_prob <= 1.0, name, "mixco_prob", "a number in [0, 1]", self.mixco_prob)
        check(self.mixco_temperature > 0, name, "mixco_temperature", "a number > 0", self.mixco_temperature)
        check(all(t > 0 for t in self.softclip_temperature), name, "softclip_temperature", "two numbers > 0",
              self.softclip_temperature)

    def uses_mixco(self, progress: float) -> bool:
        """Whether the batch at training ``progress`` (0…1) should be mixed (``mixco_batch``) before the forward."""
        if self.contrastive <= 0:
            return False
        if self.contrastive_kind == "bimixco":
            return True
        return self.contrastive_kind == "mindeye" and progress < self.mixco_fraction

    def softclip_tau(self, progress: float) -> float:
        """SoftCLIP temperature at ``progress``: annealed over the SoftCLIP phase."""
        start = self.mixco_fraction if self.contrastive_kind == "mindeye" else 0.0
        phase = (progress - start) / max(1.0 - start, 1e-9)
        return cosine_anneal(self.softclip_temperature[0], self.softclip_temperature[1], phase)


def contrastive_term(pred: torch.Tensor, target: torch.Tensor, config: LossConfig, *, progress: float = 0.0,
                     mix: MixcoBatch | None = None) -> tuple[str, torch.Tensor]:
    """The configured contrastive loss of ``pred`` vs ``target`` at ``progress``: (its name, the unweighted value)."""
    if mix is not None:
        return "bimixco", bimixco_loss(pred, target, mix.lam, mix.perm, config.mixco_temperature)
    if config.contrastive_kind in ("infonce", "bimixco"):
        return "infonce", info_nce(pred, target, config.mixco_temperature)
    return "softclip", soft_clip_loss(pred, target, config.softclip_tau(progress))


def encoder_loss(output, target: torch.Tensor, config: LossConfig, *, progress: float = 0.0,
                 mix: MixcoBatch | None = None, blurry_target: torch.Tensor | None = None,
                 caption_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted training loss of one batch.

    Parameters
    ----------
    output : EncoderOutput
        The model's output on the (possibly mixed) betas.
    target : Tensor, shape (batch, *target_shape)
        Unmixed target embeddings.
    config : LossConfig
    progress : float
        Training progress 0…1 (selects BiMixCo vs SoftCLIP and the SoftCLIP temperature).
    mix : MixcoBatch, optional
        The mixup the betas went through (``config.uses_mixco(progress)``); MSE/cosine/blurry targets are then mixed
        with the same λ, as MindEyeV2 does for its VAE targets.
    blurry_target : Tensor, shape (batch, C, H, W), optional
    caption_target : Tensor, shape (batch, D_caption), optional
        Unmixed caption embeddings; with ``output.caption`` adds ``caption`` (contrastive + MSE, weighted by
        ``config.caption``; logged as ``caption`` with its parts ``caption_<kind>`` and ``caption_mse``).

    Returns
    -------
    total : Tensor (scalar, differentiable)
    parts : dict[str, float]
        Each unweighted term, for logging.
    """
    parts: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=target.device)

    def mixed(t: torch.Tensor) -> torch.Tensor:
        if mix is None:
            return t
        shape = (-1,) + (1,) * (t.ndim - 1)
        lam = mix.lam.to(t.dtype).reshape(shape)
        return t * lam + t[mix.perm] * (1 - lam)

    if config.contrastive > 0 and output.retrieval is not None:
        name, c = contrastive_term(output.retrieval, target, config, progress=progress, mix=mix)
        parts[name] = c
        total = total + config.contrastive * c
    if config.mse > 0:
        parts["mse"] = mse_loss(output.embedding, mixed(target))
        total = total + config.mse * parts["mse"]
    if config.cosine > 0:
        parts["cosine"] = cosine_loss(output.embedding, mixed(target))
        total = total + config.cosine * parts["cosine"]
    if config.blurry > 0 and blurry_target is not None and "blurry" in output.extras:
        parts["blurry"] = F.l1_loss(output.extras["blurry"].float(), mixed(blurry_target).float())
        total = total + config.blurry * parts["blurry"]
    if config.load_balance > 0 and "load_balance" in output.aux_losses:
        parts["load_balance"] = output.aux_losses["load_balance"]
        total = total + config.load_balance * parts["load_balance"]
    caption = getattr(output, "caption", None)
    if config.caption > 0 and caption_target is not None and caption is not None:
        cap = torch.zeros((), device=target.device)
        if config.contrastive > 0:
            name, c = contrastive_term(caption, caption_target, config, progress=progress, mix=mix)
            parts[f"caption_{name}"] = c
            cap = cap + c
        parts["caption_mse"] = mse_loss(caption, mixed(caption_target))
        parts["caption"] = cap + parts["caption_mse"]
        total = total + config.caption * parts["caption"]
    return total, {k: float(v.detach()) for k, v in parts.items()}
