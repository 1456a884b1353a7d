"""One optimisation step of a torch run, on this process's block of the global batch (``engine.train.distributed``):
the masked-brain pre-training loss, the encoder loss, the backward pass and optimizer step, mixed precision."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from engine.errors import ConfigError
from engine.train.dataset import PreparedData
from engine.train.device import to_device


def autocast(device, precision: str):
    """Mixed precision on CUDA (``bf16`` / ``fp16``); the CPU trains in fp32."""
    if device.type == "cuda" and precision != "fp32":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()

def pretrain_step(model, betas: np.ndarray, rows: np.ndarray, gen, dist, key: str, precision: str):
    """The masked-patch loss of one global batch ``rows`` of ``betas`` (this process's block of it)."""
    x = to_device(betas[dist.shard(rows)], dist.device)
    if dist.active:
        # Masks from a per-step generator of this process: the trainer's generator advances alike on every
        # process (BiMixCo later draws from it for the global batch) whatever the block sizes.
        seed = int(torch.randint(2**62, (1,), generator=gen)) + dist.rank
        gen = torch.Generator().manual_seed(seed)
    with autocast(dist.device, precision):
        loss = model.pretrain_loss(x, subject=key, generator=gen) * dist.local_weight(len(rows))
    return loss, {"mae": float(loss.detach())}

def train_step(model, data: PreparedData, rows: np.ndarray, gen, loss_cfg, progress: float, blurry, dist, subject,
               precision: str):
    """(loss, parts) of one global batch ``rows`` of training trials."""
    from engine.models.losses import encoder_loss, global_batch, mixco_batch

    # ``rows`` is the global batch: this process runs its block, and every process computes the loss of the
    # global batch from the gathered outputs (engine.train.distributed).
    local = dist.local_slice(len(rows))
    mix = None
    if loss_cfg.uses_mixco(progress):
        # Partners and weights for the global batch, drawn alike on every process (same generator state).
        x = to_device(data.train_betas[rows], dist.device)
        mix = mixco_batch(x, beta=loss_cfg.mixco_beta, prob=loss_cfg.mixco_prob, generator=gen)
        x = mix.betas[local]
    else:
        x = to_device(data.train_betas[rows[local]], dist.device)
    images = data.train_image[rows]  # every process holds the targets: no need to gather them
    y = to_device(data.targets[images], dist.device)
    blurry_target = (dist.gather_rows(blurry_target_images(subject, images[local], blurry, dist.device), len(rows))
                     if blurry is not None else None)
    caption_target = (to_device(data.caption_targets[images], dist.device)
                      if data.caption_targets is not None else None)
    in_batch = global_batch(dist.sum_over_processes) if dist.active else contextlib.nullcontext()
    with autocast(dist.device, precision), in_batch:
        out = dist.gather_output(model(x, subject=subject.name), len(rows))
    return encoder_loss(out, y, loss_cfg, progress=progress, mix=mix, blurry_target=blurry_target,
                        caption_target=caption_target)

def blurry_shape(model, loss_cfg):
    """The (3, H, W) low-level target of a model with a blurry head, or None."""
    shape = getattr(model.config, "blurry_shape", None)
    if not getattr(model.config, "blurry", False) or loss_cfg.blurry <= 0:
        return None
    if shape[0] != 3:
        raise ConfigError(f"model.params.blurry_shape: the trainer's low-level target is the image itself, "
                          f"expected 3 channels, found {list(shape)}")
    return shape

def blurry_target_images(subject, images: np.ndarray, shape, device) -> torch.Tensor:
    """The seen images, area-downsampled to ``shape`` (3, H, W), in [0, 1]."""
    order = np.argsort(images, kind="stable")
    imgs = np.empty((len(images),) + subject.image_shape, np.uint8)
    imgs[order] = np.asarray(subject.images[images[order]])
    x = to_device(imgs, device).permute(0, 3, 1, 2).float() / 255.0
    return torch.nn.functional.interpolate(x, size=tuple(shape[1:]), mode="area")

def backward(loss, opt, params, scaler, clip: float, dist) -> None:
    """Gradients (averaged over the processes, scaled for fp16, clipped to ``clip``), then the optimizer step."""
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        dist.average_gradients(params)
        scaler.unscale_(opt)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()
        return
    loss.backward()
    dist.average_gradients(params)
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
