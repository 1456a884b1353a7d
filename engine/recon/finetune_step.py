"""One decoder fine-tuning step, on the generator's device: the batch, the parts that train, the loss.

``finetune_job`` (``engine.recon.finetune``) owns the loop, the optimizer and the saving; this module owns what one
step computes, so the step can run (and be tested) on any device: every random draw comes from the job's CPU
generator and is moved, the host batch goes to the device through pinned memory (``engine.train.device``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FinetuneBatch:
    """One training batch on the host (CPU tensors): clean latents and what the condition is made from."""

    latents: object  # (b, C, h, w)
    embeddings: object = None  # (b, *shape) precomputed encoder outputs (frozen encoder)
    levels: object = None  # (n_levels, b, *shape)
    betas: object = None  # (b, n_voxels) for a jointly trained encoder
    targets: object = None  # (b, *shape) true embeddings (alignment loss)


@dataclass
class FinetuneParts:
    """What one fine-tuning step uses: the generator, its training scheduler and the modules that train."""

    generator: object
    scheduler: object
    adapter: object
    router: object = None
    encoder: object = None  # trained jointly when set
    subject_key: str = ""
    prior: object = None  # the frozen EmbeddingPrior between the brain's prediction and the adapter


@dataclass
class FinetuneLoss:
    """One step's loss: ``total`` is optimised; ``diffusion`` and ``align`` (unweighted, jointly trained encoder
    only) are logged on their own."""

    total: object
    diffusion: object
    align: object = None


def finetune_loss(parts: FinetuneParts, batch: FinetuneBatch, cfg, rng) -> FinetuneLoss:
    """The loss of one fine-tuning step (``cfg``: a ``FinetuneConfig``), on the generator's device.

    Every random draw (noise, timesteps, condition dropout) comes from the CPU generator ``rng`` and is then moved,
    so a seed gives the same step on every device.
    """
    import torch

    from engine.recon.diffusion_training import min_snr_weights
    from engine.recon.guidance import drop_mask
    from engine.train.device import to_device

    gen, sched, dev = parts.generator, parts.scheduler, parts.generator.device
    x0 = to_device(batch.latents, dev)
    n = x0.shape[0]
    noise = torch.randn(x0.shape, generator=rng).to(dev)
    t = torch.randint(0, sched.config.num_train_timesteps, (n,), generator=rng).to(dev)
    xt = sched.add_noise(x0, noise, t)
    if parts.encoder is not None:
        out = parts.encoder(to_device(batch.betas, dev), subject=parts.subject_key)
        e, lv = out.embedding, out.extras.get("levels")
    else:
        e = to_device(batch.embeddings, dev)
        lv = None if batch.levels is None else to_device(batch.levels, dev)
    e_in = parts.router.mix(lv, t) if parts.router is not None and lv is not None else e
    if parts.prior is not None:
        e_in = parts.prior(e_in.float())
    cond = parts.adapter.drop(parts.adapter(e_in.float()), drop_mask(n, cfg.drop_prob, generator=rng, device=dev))
    pred = gen.predict_noise(xt, t, cond).float()
    per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
    if cfg.min_snr_gamma:
        per = per * min_snr_weights(sched, t, cfg.min_snr_gamma)
    diffusion = per.mean()
    if parts.encoder is None or cfg.align_weight <= 0:
        return FinetuneLoss(diffusion, diffusion)
    target = to_device(batch.targets, dev)
    cos = torch.nn.functional.cosine_similarity(e.float().flatten(1), target.flatten(1), dim=1)
    align = (1 - cos).mean()
    return FinetuneLoss(diffusion + cfg.align_weight * align, diffusion, align)
