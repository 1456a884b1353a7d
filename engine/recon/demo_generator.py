"""The demo generator: a small latent diffusion model for the 64×64 demo stimuli, sized to train and sample on a CPU.

Parts (diffusers classes, so the demo runs through exactly the code real generators use), as shipped
(``DEMO_ARCHITECTURE``):

- VAE: ``AutoencoderKL`` 64×64×3 → 16×16×4 (two downsamplings, no attention), latents scaled to unit variance;
- UNet: ``UNet2DConditionModel`` on 16×16 latents, channels 32/64/64, attention only at 8×8 and 4×4 (self-attention
  at 16×16 costs most of a CPU step for little gain on these images), cross-attention on 4 tokens of width 64, the
  same tokens also pooled into the timestep embedding (``global_condition``);
- conditioning: a ``ConditioningAdapter`` from the demo image embedder's pooled 128-d vector to those tokens, with
  the learned null condition, and a spatial condition: a 4×16×16 map predicted from the same vector (trained to be
  the clean latent) and concatenated to the noisy latents, as InstructPix2Pix concatenates its image; its null is
  zeros. Without it the UNet must learn where the object is from tokens that carry no position, which a CPU-sized
  build never managed (build 2: blobs); with it the UNet sharpens a layout it is given. The generator learns to
  invert the embedding (unCLIP / IP-Adapter-like), so any brain encoder that predicts demo embeddings can drive it.

Training recipe (``DemoTrainConfig``, fixed seed): render demo stimuli, embed them, train the VAE as a deterministic
autoencoder (L1 + MSE on the decoded posterior mean, a small penalty on that mean) or reuse one (``vae_from``), encode
the latents, then train the UNet (from scratch, or from an earlier build's UNet: ``init_from``) + adapter on
ε-prediction with min-SNR-γ weighting (+ the spatial map's regression), the condition dropped to the null condition
with p = 0.1, and an EMA of the weights, in ``unet_cycles`` warm-restart cycles (each from the previous cycle's EMA
weights, at a lower peak learning rate).
``resources/build/build_demo_generator.py`` runs it and writes the shipped folder ``resources/models/demo-generator/``;
``checkpoint_every`` + ``continue_from`` resume a stopped build with the same result as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.events import CancelToken, EtaClock, Log, Metric, Progress, Started, ensure_token
from engine.jsonfile import read_object  # bounded, top-level type checked

FOLDER_NAME = "demo-generator"
MANIFEST = "generator.json"
OPTIMIZER_FILE = "train_state/optimizer.safetensors"  # checkpoints only; not shipped


@dataclass(frozen=True)
class DemoGeneratorConfig:
    """Architecture of the demo generator (stored in ``generator.json``)."""

    image_size: int = 64
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (16, 32, 64)
    unet_channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, True, True)
    context_dim: int = 64
    n_tokens: int = 4
    attention_head_dim: int = 32
    embed_dim: int = 128  # demo image embedder, pooled
    # The condition tokens also enter the timestep embedding (diffusers ``addition_embed_type="text"``: attention
    # pooling → added to the time embedding, i.e. FiLM on every ResNet block), so global attributes such as colour
    # and category are learned in far fewer CPU steps than through cross-attention alone. Same UNet inputs.
    global_condition: bool = True
    # Channels of a latent-sized map the adapter predicts from the embedding, concatenated to the noisy latents
    # (InstructPix2Pix-style): the UNet then knows where things are from the first step. 0: none.
    spatial_channels: int = 0

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    @property
    def spatial_shape(self) -> tuple[int, int, int] | None:
        return (self.spatial_channels, self.latent_size, self.latent_size) if self.spatial_channels else None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DemoGeneratorConfig":
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


@dataclass(frozen=True)
class DemoTrainConfig:
    """The fixed recipe that builds the shipped weights (seeded)."""

    seed: int = 0
    n_images: int = 10000
    stimulus_seed: int = 1234
    # Build 3 (2026-12-04, issue 17): build 2's architecture + the spatial condition, its UNet and VAE as the start
    # (``init_from``; the spatial input channels start at zero), a fresh adapter for the new embedder, 2 cycles of
    # 1,000 steps on 10,000 images (~50 min on a third of a CPU core). Build 2: 4,000 images, no spatial condition,
    # VAE 1,500 steps + 3 cycles of 1,500 UNet steps from scratch (lr 1e-3): blobs of roughly the right colour.
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_crop: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4
    unet_steps: int = 1000
    unet_batch: int = 32
    unet_lr: float = 5e-4
    unet_cycles: int = 2  # warm restarts of the UNet stage, each ``unet_steps`` long
    cycle_lr_decay: float = 0.5  # peak lr of cycle c: unet_lr * cycle_lr_decay ** c
    warmup: int = 100
    drop_prob: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.995
    spatial_weight: float = 1.0  # the spatial map's regression onto the clean latent
    # Before the UNet: the adapter's spatial head alone regressed onto the clean latents (no UNet in the loop, so
    # cheap), so the UNet is given an informative layout from its first step.
    spatial_pretrain_steps: int = 2000
    spatial_pretrain_batch: int = 256
    threads: int = 1  # 1 is fastest on a shared 2-core machine (2 threads stall each other)

    def to_dict(self) -> dict:
        return asdict(self)


# The shipped demo generator's architecture (build 3): build 2's + the spatial condition.
DEMO_ARCHITECTURE = DemoGeneratorConfig(spatial_channels=4)


def build_vae(cfg: DemoGeneratorConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.vae_channels,
                         layers_per_block=1, latent_channels=cfg.latent_channels, norm_num_groups=8,
                         sample_size=cfg.image_size, mid_block_add_attention=False)


def build_unet(cfg: DemoGeneratorConfig):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return UNet2DConditionModel(sample_size=cfg.latent_size, in_channels=cfg.latent_channels + cfg.spatial_channels,
                                out_channels=cfg.latent_channels, layers_per_block=1,
                                block_out_channels=cfg.unet_channels, down_block_types=down, up_block_types=up,
                                cross_attention_dim=cfg.context_dim, attention_head_dim=cfg.attention_head_dim,
                                norm_num_groups=16,
                                addition_embed_type="text" if cfg.global_condition else None,
                                addition_embed_type_num_heads=max(1, cfg.context_dim // 16))


def build_scheduler():
    """The training noise schedule (SD-1.5's: 1000 steps, scaled-linear β 0.00085 → 0.012, ε-prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False)


def build_adapter(cfg: DemoGeneratorConfig):
    from engine.recon.conditioning import ConditioningAdapter, ConditioningConfig

    return ConditioningAdapter(ConditioningConfig(input_shape=(cfg.embed_dim,), n_tokens=cfg.n_tokens,
                                                  context_dim=cfg.context_dim, pooled_tokens=cfg.n_tokens,
                                                  spatial_shape=cfg.spatial_shape))


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


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train_demo_generator(out_dir: str | Path, recipe: DemoTrainConfig = DemoTrainConfig(),
                         cfg: DemoGeneratorConfig = DemoGeneratorConfig(), *, cancel: CancelToken | None = None,
                         images: np.ndarray | None = None, embeddings: np.ndarray | None = None,
                         embedder_identity: str | None = None, snapshot_every: int = 0,
                         continue_from: str | Path | None = None, checkpoint_every: int = 0,
                         vae_from: str | Path | None = None, init_from: str | Path | None = None,
                         device: str = "cpu"):
    """Job: train the demo generator and write it to ``out_dir`` (atomically). Returns the folder.

    Parameters
    ----------
    out_dir : path
        Destination folder (replaced when it exists).
    images : uint8 (n, 64, 64, 3), optional
        Training images; default ``render_stimuli(recipe.n_images, seed=recipe.stimulus_seed)``.
    embeddings : float (n, 128), optional
        Their demo-embedder pooled vectors; default computed with ``load_image_embedder("demo")``.
    snapshot_every : int
        When > 0, also write the EMA weights every that many UNet steps to ``<out_dir>.step<N>`` (to look at samples
        while a long build runs).
    continue_from : path, optional
        A folder this recipe wrote (same everything but ``unet_cycles``): a finished build with fewer cycles, or a
        checkpoint (``checkpoint_every``). Finished cycles are reused and training resumes where it stopped. With the
        checkpoint's ``train_state/optimizer.safetensors`` the result equals a build from scratch; without it (e.g.
        a committed folder) training resumes from the EMA weights with a fresh optimizer (a warm restart).
    checkpoint_every : int
        When > 0, write ``out_dir`` every that many UNet steps (EMA weights + ``train_state``), so a stopped build can
        be continued with ``continue_from=out_dir``.
    vae_from : path, optional
        Reuse the VAE of this demo-generator folder instead of training one (stage 1 is skipped).
    init_from : path, optional
        Start the UNet from this demo-generator folder's UNet (same block layout; extra input channels of the spatial
        condition start at zero, as InstructPix2Pix does), and reuse its VAE. The adapter starts fresh.
    device : str
        Torch device of the training ("cpu", "cuda").
    """
    import torch

    cancel = ensure_token(cancel)
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    dev = torch.device(device)
    total = recipe.vae_steps + recipe.unet_cycles * recipe.unet_steps
    yield Started(job="build-demo-generator", run_dir=str(out_dir), total=total)
    stimuli = "given images"
    if images is None:
        stimuli = f"engine.data.demo.stimuli.render_stimuli({recipe.n_images}, seed={recipe.stimulus_seed})"
        from engine.data.demo.stimuli import render_stimuli

        images = render_stimuli(recipe.n_images, seed=recipe.stimulus_seed, size=cfg.image_size).images
    if embeddings is None:
        from engine.models.embedders import load_image_embedder

        embedder = load_image_embedder("demo", device="cpu")
        embeddings = embedder.embed(images, tokens=False)
        embedder_identity = embedder.identity
    yield Log(f"{len(images)} images, embeddings {tuple(embeddings.shape)}")
    gen = torch.Generator().manual_seed(recipe.seed)
    n = len(images)

    state = {"cycle": 0, "step": 0}
    resume = None
    if init_from is not None and vae_from is None:
        vae_from = init_from
    if continue_from is not None:
        vae, unet, adapter, state, resume = _load_checkpoint(continue_from, recipe, cfg)
        vae_from = (json.loads((Path(continue_from) / MANIFEST).read_text(encoding="utf-8")).get("vae_from")
                    or vae_from)
        yield Log(f"continuing from {continue_from}: VAE and {state['cycle']} UNet cycle(s) + {state['step']} "
                  f"step(s) done" + ("" if resume else "; no optimizer state: warm restart from the EMA weights"))
    elif vae_from is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(Path(vae_from) / "vae", local_files_only=True)
        yield Log(f"VAE reused from {vae_from}")
    resumed_at = recipe.vae_steps + state["cycle"] * recipe.unet_steps + state["step"] \
        if (continue_from is not None or vae_from is not None) else 0
    clock = EtaClock(total, start_step=resumed_at)

    # ---- stage 1: VAE ------------------------------------------------------------------------------------------------
    if continue_from is None and vae_from is None:
        vae = yield from _train_vae(images, recipe, cfg, gen, cancel, clock)
    vae = vae.to(dev).eval().requires_grad_(False)
    with torch.no_grad():
        lat = torch.cat([vae.encode(images_to_tensor(images[i:i + 256]).to(dev)).latent_dist.mean
                         for i in range(0, n, 256)])
    if continue_from is None and vae_from is None:
        vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    scaling = float(vae.config.scaling_factor)
    lat = lat * scaling
    yield Log(f"VAE ready: latents {tuple(lat.shape[1:])}, scaling factor {scaling:.4f}")

    # ---- stage 2: UNet + conditioning adapter, in cycles ------------------------------------------------------------
    # Each cycle is a warm restart (SGDR-like): a fresh AdamW and EMA starting from the previous cycle's EMA weights
    # at a decayed peak lr. Every step draws its batch and noise from its own generator (seed, cycle, step), so a
    # resumed build sees the same data as an uninterrupted one.
    from engine.recon.guidance import drop_mask

    if continue_from is None:
        unet = build_unet(cfg)
        if init_from is not None:
            _init_unet_from(unet, Path(init_from))
            yield Log(f"UNet initialised from {init_from}")
        adapter = build_adapter(cfg)
        adapter.set_statistics(embeddings)
        if adapter.spatial_proj is not None and recipe.spatial_pretrain_steps:
            err = _pretrain_spatial(adapter, torch.from_numpy(np.asarray(embeddings, np.float32)).to(dev), lat,
                                    recipe, dev)
            yield Log(f"spatial head pre-trained: {recipe.spatial_pretrain_steps} steps, latent MSE {err:.3f}")
    unet.to(dev).train()
    adapter.to(dev).train()
    sched = build_scheduler()
    emb = torch.from_numpy(np.asarray(embeddings, np.float32)).to(dev)
    params = list(unet.parameters()) + list(adapter.parameters())
    if continue_from is not None:
        init_from = json.loads((Path(continue_from) / MANIFEST).read_text(encoding="utf-8")).get("init_from")
    save_kw = dict(vae=vae, unet=unet, adapter=adapter, scheduler=sched, cfg=cfg, recipe=recipe,
                   embedder_identity=embedder_identity, stimuli=stimuli, vae_from=vae_from, init_from=init_from)
    for cycle in range(state["cycle"], recipe.unet_cycles):
        first = state["step"] if cycle == state["cycle"] else 0
        peak = recipe.unet_lr * recipe.cycle_lr_decay ** cycle
        opt = torch.optim.AdamW(params, lr=peak, weight_decay=1e-2)
        ema = [p.detach().clone() for p in params]
        if first and resume is not None:
            _restore_optimizer(resume, params, opt)
        for step in range(first, recipe.unet_steps):
            cancel.raise_if_set()
            done = cycle * recipe.unet_steps + step  # UNet steps before this one, all cycles
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, recipe.unet_steps, peak, recipe.warmup)
            loss, parts = _unet_loss(unet, adapter, sched, lat, emb, recipe, _step_rng(recipe.seed, cycle, step),
                                     drop_mask)
            update_with_ema(opt, params, loss, ema, step, recipe.ema_decay)
            if step % 50 == 0 or step == recipe.unet_steps - 1:
                for name, value in parts.items():
                    yield Metric(name, value, step=done)
            last = step + 1 == recipe.unet_steps
            if not last and ((snapshot_every and (done + 1) % snapshot_every == 0)
                             or (checkpoint_every and (done + 1) % checkpoint_every == 0)):
                with _ema_swapped(params, ema) as live:
                    if snapshot_every and (done + 1) % snapshot_every == 0:
                        snap = Path(out_dir).with_name(f"{Path(out_dir).name}.step{done + 1}")
                        save_demo_generator(snap, **save_kw)
                        yield Log(f"snapshot after {done + 1} UNet steps: {snap}")
                    if checkpoint_every and (done + 1) % checkpoint_every == 0:
                        save_demo_generator(out_dir, **save_kw, train_state={"cycle": cycle, "step": step + 1,
                                                                             "complete": False},
                                            optimizer=_optimizer_state(opt, params, live))
                        yield Log(f"checkpoint after {done + 1} UNet steps: {out_dir}")
            s = recipe.vae_steps + done + 1
            yield Progress(s, clock.total, eta_s=clock.eta(s), stage=f"unet cycle {cycle + 1}")
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
        if cycle + 1 < recipe.unet_cycles:
            if checkpoint_every:  # a finished cycle: the next one starts afresh from these weights (exact resume)
                save_demo_generator(out_dir, **save_kw, train_state={"cycle": cycle + 1, "step": 0,
                                                                     "complete": False})
            yield Log(f"UNet cycle {cycle + 1} of {recipe.unet_cycles} done")
    unet.cpu()
    adapter.cpu()
    vae.cpu()
    folder = save_demo_generator(out_dir, **save_kw, train_state={"cycle": recipe.unet_cycles, "step": 0,
                                                                  "complete": True})
    yield Log(f"demo generator written to {folder}")
    return folder


def _train_vae(images: np.ndarray, recipe: DemoTrainConfig, cfg: DemoGeneratorConfig, gen, cancel, clock):
    """Stage 1 (a sub-job): the VAE as a deterministic autoencoder on random crops. Returns the VAE."""
    import torch

    vae = build_vae(cfg)
    n = len(images)
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    for step in range(recipe.vae_steps):
        cancel.raise_if_set()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe.vae_steps, recipe.vae_lr, recipe.warmup)
        idx = torch.randint(0, n, (recipe.vae_batch,), generator=gen)
        x = images_to_tensor(images[idx.numpy()])
        if recipe.vae_crop and recipe.vae_crop < x.shape[-1]:
            # The autoencoder is fully convolutional: random crops train it at a quarter of the cost.
            i, j = torch.randint(0, x.shape[-1] - recipe.vae_crop + 1, (2,), generator=gen).tolist()
            x = x[:, :, i:i + recipe.vae_crop, j:j + recipe.vae_crop]
        post = vae.encode(x).latent_dist
        # Decode the posterior mean: with few CPU steps, sampling (log-variance starts at 0, i.e. unit noise)
        # keeps the decoder from learning; a small penalty on the mean keeps the latents bounded instead of the KL.
        rec = vae.decode(post.mean).sample
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + recipe.kl_weight * (post.mean ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == recipe.vae_steps - 1:
            yield Metric("vae_loss", float(loss.detach()), step=step)
        yield Progress(step + 1, clock.total, eta_s=clock.eta(step + 1), stage="vae")
    return vae


def _init_unet_from(unet, folder: Path) -> None:
    """Copy a trained UNet's weights into ``unet``; input channels it lacks (the spatial condition) start at zero."""
    import torch
    from diffusers import UNet2DConditionModel

    from engine.errors import CheckpointError

    src = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True).state_dict()
    own = unet.state_dict()
    for k, v in own.items():
        w = src.get(k)
        if w is None:
            raise CheckpointError(f"{folder / 'unet'}: no weight {k}; init_from needs the same UNet layout")
        if k == "conv_in.weight" and w.shape[1] < v.shape[1] and w.shape[0] == v.shape[0]:
            w = torch.cat([w, torch.zeros(v.shape[0], v.shape[1] - w.shape[1], *v.shape[2:])], dim=1)
        if w.shape != v.shape:
            raise CheckpointError(f"{folder / 'unet'}: weight {k} has shape {tuple(w.shape)}, expected "
                                  f"{tuple(v.shape)}")
        own[k] = w
    unet.load_state_dict(own)


PRETRAIN_STREAM = 999  # the spatial pre-training's batches: its own stream of ``_step_rng``


def _pretrain_spatial(adapter, emb, lat, recipe: DemoTrainConfig, dev) -> float:
    """Fit the adapter's spatial head alone to the clean latents (AdamW, cosine lr); returns the last batch's MSE."""
    import torch

    adapter.to(dev)
    params = list(adapter.spatial_proj.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    loss = torch.zeros(())
    for step in range(recipe.spatial_pretrain_steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe.spatial_pretrain_steps, 1e-3, recipe.warmup)
        idx = torch.randint(0, len(lat), (recipe.spatial_pretrain_batch,),
                            generator=_step_rng(recipe.seed, PRETRAIN_STREAM, step)).to(dev)
        z = ((emb[idx] - adapter.mean) / adapter.std).flatten(1)  # as ConditioningAdapter.forward
        loss = spatial_regression(adapter.spatial_proj(z).view(len(idx), *adapter.config.spatial_shape), lat[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def _step_rng(seed: int, cycle: int, step: int):
    import torch

    return torch.Generator().manual_seed(int(seed) * 1_000_003 + cycle * 100_003 + step)


def _unet_loss(unet, adapter, sched, lat, emb, recipe: DemoTrainConfig, rng, drop_mask):
    """One training batch: min-SNR ε-prediction loss (+ the spatial map's latent regression). (loss, parts)."""
    import torch

    dev = lat.device
    idx = torch.randint(0, len(lat), (recipe.unet_batch,), generator=rng)
    x0 = lat[idx.to(dev)]
    noise = torch.randn(x0.shape, generator=rng).to(dev)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=rng).to(dev)
    xt = sched.add_noise(x0, noise, t)
    cond = adapter(emb[idx.to(dev)])
    parts = {}
    spatial_loss = None
    if cond.spatial is not None:
        # The map is asked to be the clean latent itself (what a linear read-out of the embedding can say about the
        # layout); the diffusion loss refines what it must carry beyond that.
        spatial_loss = spatial_regression(cond.spatial, x0)
        parts["spatial_loss"] = float(spatial_loss.detach())
    cond = adapter.drop(cond, drop_mask(len(idx), recipe.drop_prob, generator=rng).to(dev))
    unet_in = xt if cond.spatial is None else torch.cat([xt, cond.spatial], dim=1)
    pred = unet(unet_in, t, encoder_hidden_states=cond.tokens).sample
    w = min_snr_weights(sched, t, recipe.min_snr_gamma)
    loss = (w * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
    parts["diffusion_loss"] = float(loss.detach())
    if spatial_loss is not None:
        loss = loss + recipe.spatial_weight * spatial_loss
    return loss, parts


@contextlib.contextmanager
def _ema_swapped(params, ema):
    """Inside: the parameters hold the EMA weights (yields their live values); after: the live values again."""
    import torch

    with torch.no_grad():
        live = [p.detach().clone() for p in params]
        for p, e in zip(params, ema):
            p.copy_(e)
    try:
        yield live
    finally:
        with torch.no_grad():
            for p, v in zip(params, live):
                p.copy_(v)


def _optimizer_state(opt, params, live) -> dict:
    """Live weights and AdamW moments as flat tensors (``live.i``, ``exp_avg.i``, ``exp_avg_sq.i``, ``step.i``)."""
    import torch

    out = {}
    for i, (p, v) in enumerate(zip(params, live)):
        out[f"live.{i}"] = v.detach().cpu().contiguous()
        st = opt.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st:
                out[f"{k}.{i}"] = st[k].detach().cpu().contiguous()
        if "step" in st:
            out[f"step.{i}"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1).cpu()
    return out


def _restore_optimizer(state: dict, params, opt) -> None:
    """Put the checkpoint's live weights and AdamW moments back (the EMA is what the folder's weights hold)."""
    import torch

    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(state[f"live.{i}"].to(p.device))
            if f"exp_avg.{i}" in state:
                opt.state[p] = {"step": torch.tensor(float(state[f"step.{i}"][0])),
                                "exp_avg": state[f"exp_avg.{i}"].to(p.device).clone(),
                                "exp_avg_sq": state[f"exp_avg_sq.{i}"].to(p.device).clone()}


def _load_checkpoint(folder, recipe: DemoTrainConfig, cfg: DemoGeneratorConfig):
    """(vae, unet, adapter, train state, optimizer state or None) of a folder this recipe wrote."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file

    from engine.errors import CheckpointError
    from engine.recon.conditioning import ConditioningAdapter

    folder = Path(folder)
    meta = read_object(folder / MANIFEST)
    done_recipe = {"unet_cycles": 1, "cycle_lr_decay": recipe.cycle_lr_decay, **(meta.get("recipe") or {})}
    mine = recipe.to_dict()
    differ = sorted(k for k in mine if k != "unet_cycles" and done_recipe.get(k) != mine[k])
    if differ or DemoGeneratorConfig.from_dict(meta["config"]) != cfg:
        raise CheckpointError(f"{folder / MANIFEST}: built with another recipe or architecture (keys {differ})")
    state = meta.get("train_state") or {"cycle": int(done_recipe["unet_cycles"]), "step": 0, "complete": True}
    state = {"cycle": int(state["cycle"]), "step": int(state["step"])}
    if state["cycle"] >= recipe.unet_cycles:
        raise CheckpointError(f"{folder}: already has {state['cycle']} UNet cycle(s); the recipe asks for "
                              f"{recipe.unet_cycles}")
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True).train()
    adapter = ConditioningAdapter.load(folder / "adapter")
    opt_file = folder / OPTIMIZER_FILE
    resume = load_file(str(opt_file)) if state["step"] and opt_file.is_file() else None
    return vae, unet, adapter, state, resume


def save_demo_generator(out_dir, *, vae, unet, adapter, scheduler, cfg: DemoGeneratorConfig,
                        recipe: DemoTrainConfig | None = None, embedder_identity: str | None = None,
                        stimuli: str | None = None, train_state: dict | None = None, optimizer: dict | None = None,
                        vae_from: str | Path | None = None, init_from: str | Path | None = None) -> Path:
    """Write the generator folder (diffusers layout for vae/unet/scheduler, plus adapter and ``generator.json``).

    ``train_state`` (cycle, step, complete) and ``optimizer`` (flat tensors, ``train_state/optimizer.safetensors``)
    make the folder a checkpoint ``train_demo_generator(continue_from=...)`` resumes from.
    """
    from engine.atomic import atomic_dir, atomic_save_safetensors

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        adapter.save(tmp / "adapter")
        if optimizer:
            (tmp / OPTIMIZER_FILE).parent.mkdir()
            atomic_save_safetensors(tmp / OPTIMIZER_FILE, optimizer)
        manifest = {"kind": "demo", "schema": 1, "config": cfg.to_dict(), "embedder": "demo",
                    "embedder_identity": embedder_identity, "condition": "pooled", "stimuli": stimuli,
                    "recipe": recipe.to_dict() if recipe else None,
                    "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if train_state is not None:
            manifest["train_state"] = train_state
        if vae_from is not None:
            manifest["vae_from"] = str(vae_from)
        if init_from is not None:
            manifest["init_from"] = str(init_from)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir


def refit_demo_adapter(folder: str | Path, recipe: DemoTrainConfig = DemoTrainConfig(), *, steps: int = 600,
                       lr: float = 1e-3, cancel: CancelToken | None = None, images: np.ndarray | None = None,
                       embeddings: np.ndarray | None = None, embedder_identity: str | None = None):
    """Job: retrain only the conditioning adapter of a demo generator folder (VAE and UNet frozen), in place.

    For when the demo image embedder is rebuilt after the generator: the UNet keeps its condition space and a new
    adapter learns to map the new embeddings into it (same diffusion loss, null-condition dropout and min-SNR weights
    as the full recipe). Returns the folder.
    """
    import torch

    from engine.recon.generators import load_demo_generator
    from engine.recon.guidance import drop_mask

    cancel = ensure_token(cancel)
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    yield Started(job="refit-demo-adapter", run_dir=str(folder), total=steps)
    gen = load_demo_generator(folder, config=None)
    cfg = DemoGeneratorConfig.from_dict(gen.info["config"])
    if images is None:
        from engine.data.demo.stimuli import render_stimuli

        images = render_stimuli(recipe.n_images, seed=recipe.stimulus_seed, size=cfg.image_size).images
    if embeddings is None:
        from engine.models.embedders import load_image_embedder

        embedder = load_image_embedder("demo", device="cpu")
        embeddings = embedder.embed(images, tokens=False)
        embedder_identity = embedder.identity
    with torch.no_grad():
        lat = torch.cat([gen.encode(images[i:i + 256]) for i in range(0, len(images), 256)]).float()
    adapter = build_adapter(cfg)
    adapter.set_statistics(embeddings)
    sched = build_scheduler()
    emb = torch.from_numpy(np.asarray(embeddings, np.float32))
    opt = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=1e-2)
    gen_rng = torch.Generator().manual_seed(recipe.seed)
    clock = EtaClock(steps)
    for step in range(steps):
        cancel.raise_if_set()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, min(recipe.warmup, steps // 10 + 1))
        idx = torch.randint(0, len(images), (recipe.unet_batch,), generator=gen_rng)
        x0 = lat[idx]
        noise = torch.randn(x0.shape, generator=gen_rng)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen_rng)
        cond = adapter(emb[idx])
        spatial_loss = 0.0 if cond.spatial is None else recipe.spatial_weight * spatial_regression(cond.spatial, x0)
        cond = adapter.drop(cond, drop_mask(len(idx), recipe.drop_prob, generator=gen_rng))
        pred = gen.predict_noise(sched.add_noise(x0, noise, t), t, cond)
        loss = (min_snr_weights(sched, t, recipe.min_snr_gamma) * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        loss = loss + spatial_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            yield Metric("diffusion_loss", float(loss.detach()), step=step)
        yield Progress(step + 1, steps, eta_s=clock.eta(step + 1), stage="adapter")
    folder = Path(folder)
    adapter.save(folder / "adapter")
    meta = dict(gen.info)
    meta["embedder_identity"] = embedder_identity
    meta["adapter_refit"] = {"steps": steps, "lr": lr,
                             "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    from engine.atomic import atomic_write_json

    atomic_write_json(folder / MANIFEST, meta)
    yield Log(f"adapter refitted for embedder {embedder_identity}")
    return folder
