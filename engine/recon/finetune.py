"""Fine-tuning the decoder of a run: conditioning adapter (+ LoRA or cross-attention) on the run's encoder outputs.

``finetune_job(run_dir, generator="demo", config=FinetuneConfig(...), cancel=...)`` trains, on the subject's training
trials, what turns this run's predicted embeddings into images:

- the conditioning adapter (started from the generator's own adapter when the run predicts the same embedding, else
  fresh) and its learned null condition, with the condition dropped with ``drop_prob`` (0.1); the generator's own
  adapter is kept as trained when the embedding prior is fitted (``adapter="auto"``, see ``FinetuneConfig``);
- optionally the UNet: ``unet="lora"`` adds peft LoRA of rank ``lora_rank`` on the attention projections
  (``to_q``, ``to_k``, ``to_v``, ``to_out.0``; plus ``ff.net.0.proj``, ``ff.net.2`` with ``lora_ff``), as MoRE-Brain;
  ``unet="cross_attn"`` trains the cross-attention layers (``attn2``, ``norm2``) as upstream NeuroLens / MinD-Vis;
- optionally the brain encoder itself (``joint_encoder``), with the auxiliary alignment loss
  ``align_weight * (1 - cos(predicted, true embedding))`` (upstream NeuroLens "clipA": 0.03);
- for a Mixture-of-Experts encoder, a ``TimestepRouter`` over its expert levels;
- a ``BlurryRidge`` for the low-level image when the encoder has no blurry head;
- first, for vector embeddings, the embedding prior (``engine.recon.embedding_prior``, ``prior_epochs``): the brain's
  predictions → the image embeddings they stand for; the adapter reads its output while training and sampling.
  When nothing else trains (adapter kept, frozen UNet, no router), the fitted prior is the whole fine-tuning.

Loss: ε-MSE on the VAE latents of the seen images, with min-SNR-γ weights when ``min_snr_gamma`` is set.
Everything is written to ``RUN_DIR/decoder/`` (``engine.recon.decoder``: atomically, after every epoch and when
cancelled, a ``Checkpoint`` event each time). ``finetune_job(..., resume=True)`` continues from that state with the
saved settings, as training resumes: the result equals an uninterrupted run's (optimizer, RNG and batch order are
restored).

The settings are ``FinetuneConfig`` (``engine.recon.finetune_config``); what of the UNet trains, ``engine.recon.lora``;
one step's loss, ``engine.recon.finetune_step``. The job runs in stages, each its own function and in this order (the
random draws of building the parts must not move): open the run's model, load the generator, compute the training
data, build what trains, restore a resumed state, train, report.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import Cancelled, ConfigError
from engine.events import CancelToken, Checkpoint, EtaClock, Finished, Log, Metric, Progress, Started, ensure_token
from engine.recon.decoder import DECODER_FILE, read_resume_state, restore_training_state, save_decoder
from engine.recon.finetune_config import FinetuneConfig
from engine.recon.lora import trainable_unet_parameters
from engine.train.trained_model import TrainedModel


@dataclass(frozen=True)
class FinetuneResult:
    decoder_dir: str
    steps: int
    loss: float


@dataclass
class _TrainingData:
    """The run's encoder outputs on the training trials, and the seen images' latents."""

    rows: np.ndarray  # the training trials
    betas: np.ndarray  # their normalised betas
    images_of_rows: np.ndarray  # the image each trial showed
    embeddings: np.ndarray  # the encoder's predictions (n, *shape)
    levels: np.ndarray | None  # a Mixture-of-Experts encoder's levels (n_levels, n, *shape)
    blurry: np.ndarray | None  # the encoder's own low-level images
    targets: np.ndarray  # the true embeddings of every image of the subject
    positions: np.ndarray  # per trial, its image's row in ``latents``
    latents: object  # torch (n_distinct_images, C, h, w)


@dataclass
class _Training:
    """One fine-tuning while it runs: what trains, its optimizer, and how far the loop is."""

    cfg: FinetuneConfig
    model: TrainedModel
    out_dir: Path
    gen: object
    data: _TrainingData
    adapter: object
    router: object
    encoder: object  # the jointly trained encoder, else None
    prior: object  # the fitted EmbeddingPrior, else None
    optimizer: object
    params: list
    scaler: object
    amp_dtype: object
    parts: object  # FinetuneParts
    rng: object
    per_epoch: int
    total: int
    step: int = 0
    last_loss: float = float("nan")

    def save(self, epoch: int, batch: int, order) -> Path:
        position = {"step": self.step, "epoch": epoch, "batch": batch, "loss": self.last_loss, "total": self.total,
                    "order": None if order is None else order.tolist()}
        d = self.data
        return save_decoder(self.out_dir, self.cfg, self.gen, self.adapter, self.router, self.encoder, self.prior,
                            self.model.info, self.step, d.embeddings, d.blurry, self.model.subject.images,
                            d.images_of_rows, d.levels, d.rows, optimizer=self.optimizer, rng=self.rng,
                            position=None if self.optimizer is None else position)


def finetune_job(run_dir, generator: str | None = None, config: FinetuneConfig | None = None,
                 cancel: CancelToken | None = None, *, subject=None, resume: bool = False):
    """Job: fine-tune the decoder of ``run_dir`` (see the module docstring). Returns ``FinetuneResult``.

    Parameters
    ----------
    run_dir : path
        A finished encoder run.
    generator : str, optional
        Overrides ``config.generator`` (``"demo"`` or a local folder).
    config : FinetuneConfig
    subject : path or Subject, optional
        Default: the subject named in the run's ``provenance.json``.
    resume : bool
        Continue the interrupted fine-tuning in ``RUN_DIR/decoder/`` with its saved settings (``generator`` and
        ``config`` are then ignored).
    """
    import torch

    cfg = config or FinetuneConfig()
    if generator is not None:
        cfg = cfg.replace(generator=str(generator))
    cancel = ensure_token(cancel)
    model = TrainedModel.open(run_dir, subject)
    saved_state = None
    if resume:
        saved_meta, saved_state = read_resume_state(model.run.decoder_dir)
        cfg = FinetuneConfig.from_dict(saved_meta["config"], "config",
                                       source=model.run.decoder_dir / DECODER_FILE)
        if "prior_epochs" not in saved_meta["config"]:  # started before the embedding prior existed
            cfg = cfg.replace(prior_epochs=0)
        if "adapter" not in saved_meta["config"]:  # started when the adapter always trained
            cfg = cfg.replace(adapter="train")
    yield Started(job="finetune", run_dir=str(model.run.path))
    subj = model.subject
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    gen = yield from _load_generator(cfg, subj)
    data = yield from _training_data(model, gen, cfg, cancel)
    prior = yield from _embedding_prior(cfg, data, gen, cancel,
                                        resume_dir=None if saved_state is None else model.run.decoder_dir)
    t = yield from _build_training(cfg, model, gen, data, prior, rng)
    start_epoch, start_batch, saved_order = 0, 0, None
    if saved_state is not None:
        restore_training_state(t.out_dir, saved_state, adapter=t.adapter, router=t.router, unet=gen.unet,
                               unet_mode=cfg.unet, encoder=t.encoder, optimizer=t.optimizer, rng=rng)
        t.step, start_epoch, start_batch = saved_state["step"], saved_state["epoch"], saved_state["batch"]
        saved_order = saved_state.get("order")
        t.last_loss = saved_state.get("loss", t.last_loss)
        yield Log(f"resuming at step {t.step} of {t.total} (epoch {start_epoch + 1}, batch {start_batch})")
    yield from _train(t, cancel, start_epoch, start_batch, saved_order)
    if t.router is not None:
        yield Log(describe_router_change(t.router))
    yield Finished(status="done", summary={"step": t.step, "diffusion_loss": t.last_loss if t.step else None})
    return FinetuneResult(str(t.out_dir), t.step, t.last_loss)


def _load_generator(cfg: FinetuneConfig, subj):
    """Stage: the generator the decoder is fine-tuned for, checked against the subject's images."""
    from engine.recon.generators import GeneratorConfig, load_generator
    from engine.recon.own_generator import check_generator_subject

    gen = load_generator(GeneratorConfig(spec=cfg.generator, device=cfg.device, dtype=cfg.dtype,
                                         ip_adapter=cfg.ip_adapter))
    check_generator_subject(gen, subj)
    yield Log(f"generator {gen.kind} ({gen.path}), {gen.image_size}px, context {gen.n_tokens}×{gen.context_dim}"
              + (f", IP-Adapter {gen.info['ip_adapter']}" if gen.image_embed_dim else ""))
    return gen


def _training_data(model: TrainedModel, gen, cfg: FinetuneConfig, cancel):
    """Stage: the run's encoder outputs on the training trials, and the seen images' latents."""
    import torch

    subj = model.subject
    _, _, rows = model.split("train")
    betas = model.betas(rows)
    images_of_rows = np.asarray(subj.trials.image_index)[rows].astype(np.int64)
    encoder = model.encoder
    if cfg.joint_encoder and hasattr(encoder, "coef_"):
        raise ConfigError("finetune: joint_encoder needs a torch encoder (mlp, mbm, moe), found a ridge run")
    out = model.outputs(betas, device=gen.device)
    targets = model.targets()
    uniq, pos = np.unique(images_of_rows, return_inverse=True)
    yield Log(f"{len(rows)} training trials on {len(uniq)} images; encoding them with the generator's VAE")
    # start-up work as its own stage, so the fine-tuning's time left is measured on fine-tuning steps only
    starts = range(0, len(uniq), 64)
    encode_clock, parts = EtaClock(len(starts)), []
    for i, s in enumerate(starts):
        cancel.raise_if_set()
        parts.append(gen.encode(np.asarray(subj.images[uniq[s:s + 64]])).float().cpu())
        yield Progress(i + 1, len(starts), eta_s=encode_clock.eta(i + 1), stage="encode images",
                       message="the seen images' latents")
    return _TrainingData(rows, betas, images_of_rows, out.embeddings, out.levels, out.blurry, targets, pos,
                         torch.cat(parts))


def _embedding_prior(cfg: FinetuneConfig, data: _TrainingData, gen, cancel, *, resume_dir: Path | None):
    """Stage: the embedding prior fitted on the training trials, on the generator's device (from its own CPU random
    stream), or the one saved with the fine-tuning being resumed; None when off or not applicable."""
    from engine.recon.decoder import PRIOR_DIR
    from engine.recon.embedding_prior import PRIOR_BATCH, EmbeddingPrior, fit_embedding_prior
    from engine.recon.finetune_config import DEFAULT_PRIOR_EPOCHS
    from engine.recon.own_generator import KIND as OWN_KIND

    epochs = cfg.prior_epochs
    if epochs is None:
        epochs = 0 if gen.kind == OWN_KIND else DEFAULT_PRIOR_EPOCHS
    if not epochs or cfg.joint_encoder or data.embeddings.ndim != 2:
        return None
    if resume_dir is not None and (resume_dir / PRIOR_DIR).is_dir():
        yield Log("embedding prior: the one fitted before the interruption")
        return EmbeddingPrior.load(resume_dir / PRIOR_DIR).to(gen.device).requires_grad_(False)
    targets = data.targets[data.images_of_rows]
    steps = -(-len(targets) // PRIOR_BATCH) * epochs
    steps = steps if cfg.max_steps is None else min(steps, cfg.max_steps)
    prior = yield from fit_embedding_prior(data.embeddings, targets, steps=steps, noise=cfg.prior_noise,
                                           seed=cfg.seed, cancel=cancel, device=gen.device)
    yield Log(f"embedding prior fitted on {len(targets)} training trials ({steps} steps, input noise "
              f"{cfg.prior_noise:g})")
    return prior.requires_grad_(False)


def _build_training(cfg: FinetuneConfig, model: TrainedModel, gen, data: _TrainingData, prior, rng):
    """Stage: the adapter (and router, UNet weights, encoder) that train, their optimizer and the loss's parts."""
    import torch
    from diffusers import DDPMScheduler

    from engine.recon.finetune_step import FinetuneParts

    adapter, router = yield from _adapter_and_router(cfg, model, gen, data, prior)
    groups = [{"params": [p for p in adapter.parameters() if p.requires_grad], "lr": cfg.lr}]
    if router is not None:
        # only the slopes (one per level: the schedule's shape) at router_lr; the time query and level keys at the
        # adapter's rate, or the query's high-frequency sinusoid features make the learned weights jitter across t
        groups.append({"params": [router.slope], "lr": cfg.router_lr})
        groups[0]["params"] += [p for n, p in router.named_parameters() if n != "slope"]
    unet_params = trainable_unet_parameters(gen.unet, cfg.unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_ff)
    if unet_params:
        groups.append({"params": unet_params, "lr": cfg.unet_lr})
    encoder = model.encoder if cfg.joint_encoder else None
    if encoder is not None:
        encoder.train()
        groups.append({"params": [p for p in encoder.parameters() if p.requires_grad], "lr": cfg.encoder_lr})
    # The trained weights stay fp32 in a bf16/fp16 generator (an fp32 master copy for AdamW, as diffusers' training
    # scripts do); the frozen rest computes in the generator's precision under autocast; fp16 also needs loss scaling.
    amp_dtype = gen.dtype if gen.dtype != torch.float32 else None
    for p in unet_params:
        p.data = p.data.float()
    groups = [g for g in groups if g["params"]]
    opt = None
    if groups:
        opt = torch.optim.AdamW(groups, weight_decay=1e-2, fused=True if gen.device.type == "cuda" else None)
    else:
        yield Log("nothing else trains (the generator's adapter kept, frozen UNet, no router): the decoder is the "
                  "generator's adapter reading the fitted prior")
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    # The generator's own noise schedule (an SD folder ships a PNDM config; the betas are what matter here).
    sched = DDPMScheduler.from_config({k: v for k, v in gen.scheduler_config.items() if not k.startswith("_")})
    parts = FinetuneParts(gen, sched, adapter, router, encoder, model.subject_key, prior)
    n = len(data.rows)
    per_epoch = max(1, n // cfg.batch_size)
    total = per_epoch * cfg.epochs if cfg.max_steps is None else min(per_epoch * cfg.epochs, cfg.max_steps)
    total = total if opt is not None else 0
    return _Training(cfg, model, model.run.decoder_dir, gen, data, adapter, router, encoder, prior, opt,
                     [p for g in groups for p in g["params"]], scaler, amp_dtype, parts, rng, per_epoch, total)


def _adapter_and_router(cfg: FinetuneConfig, model: TrainedModel, gen, data: _TrainingData, prior):
    """The conditioning adapter (from the generator's own when the run predicts its embedding) and, for a
    Mixture-of-Experts encoder, the timestep router, on the generator's device."""
    from engine.recon.conditioning import ConditioningAdapter
    from engine.recon.timestep_router import TimestepRouter

    shape = model.target_shape
    same_space = (gen.adapter is not None and tuple(gen.adapter.config.input_shape) == shape
                  and gen.embedder == model.info["embedder"])
    keep = cfg.adapter == "keep" or (cfg.adapter == "auto" and prior is not None and same_space)
    if keep and not same_space:
        raise ConfigError(f"finetune: adapter 'keep' needs the generator's own adapter for this run's embedding: "
                          f"generator {gen.path} reads {gen.embedder or 'no image embedding'}, the run predicts "
                          f"{model.info['embedder']} {shape}; use adapter 'train' or 'auto'")
    if keep:
        adapter = copy.deepcopy(gen.adapter).float().requires_grad_(False)
        yield Log("the generator's own adapter, kept as trained"
                  + (": the embedding prior maps the brain's predictions into the embedding it reads"
                     if prior is not None else " (adapter 'keep')"))
    elif same_space:
        adapter = copy.deepcopy(gen.adapter).float()
        yield Log("adapter starts from the generator's own image-embedding adapter")
        if adapter.spatial_proj is not None:
            # Its layout decoder was trained on true embeddings with a regression target; the diffusion loss alone,
            # on noisy brain predictions, blurs it (demo, build 5: the judge's category 47 % → 25 %). Kept frozen.
            adapter.spatial_proj.requires_grad_(False)
            yield Log("the adapter's spatial head stays as the generator trained it")
    else:
        adapter = ConditioningAdapter(gen.adapter_config(shape))
    if not keep:  # a kept adapter keeps the statistics of the embeddings it was trained on
        adapter.set_statistics(data.embeddings if prior is None else prior.map_array(data.embeddings))
    adapter.to(gen.device).train(not keep)
    router = None
    if data.levels is not None and cfg.router:
        router = TimestepRouter(data.levels.shape[0], num_train_timesteps=1000).to(gen.device)
        yield Log(f"timestep router over {data.levels.shape[0]} expert levels")
    return adapter, router


def _train(t: _Training, cancel, start_epoch: int, start_batch: int, saved_order):
    """Stage: the epochs, from where a resumed fine-tuning stopped; saves after every epoch and when cancelled."""
    import torch

    if t.optimizer is None:  # nothing trains: write the decoder once, complete
        saved = t.save(t.cfg.epochs, 0, None)
        yield Checkpoint(path=str(saved), step=0)
        return
    batches = _Batches(t.data, t.cfg.joint_encoder)
    n, bs = len(t.data.rows), t.cfg.batch_size
    clock = EtaClock(t.total, start_step=t.step)
    saved = None
    epoch, b, order = start_epoch, start_batch, None
    try:
        for epoch in range(start_epoch, t.cfg.epochs):
            if t.step >= t.total:
                break
            # The batch order is drawn at the start of an epoch; a resumed epoch reuses the saved one.
            order = (torch.tensor(saved_order, dtype=torch.int64) if epoch == start_epoch and saved_order
                     else torch.randperm(n, generator=t.rng))
            for b in range(start_batch if epoch == start_epoch else 0, t.per_epoch):
                if t.step >= t.total:
                    break
                cancel.raise_if_set()
                step_loss = _step(t, batches.batch(order[b * bs:(b + 1) * bs]))
                t.step += 1
                t.last_loss = float(step_loss.total.detach())
                yield Metric("diffusion_loss", float(step_loss.diffusion.detach()), step=t.step)
                if step_loss.align is not None:  # the CLIP-alignment term on its own (unweighted), and the total
                    yield Metric("align_loss", float(step_loss.align.detach()), step=t.step)
                    yield Metric("loss", t.last_loss, step=t.step)
                yield Progress(t.step, t.total, eta_s=clock.eta(t.step), stage=f"finetune epoch {epoch + 1}")
            else:
                b = t.per_epoch
            saved = t.save(epoch + 1, 0, None) if b >= t.per_epoch else t.save(epoch, b, order)
            yield Checkpoint(path=str(saved), step=t.step)
    except Cancelled as e:
        # Checked before batch ``b`` touched any state: save the position so ``resume`` redoes exactly that batch.
        saved = t.save(epoch, b, order) if t.step > 0 else saved
        raise Cancelled(str(e), checkpoint=None if saved is None else str(saved)) from None


class _Batches:
    """Training batches on the host, by trial positions: latents and encoder outputs (or betas and targets when the
    encoder trains too)."""

    def __init__(self, data: _TrainingData, joint_encoder: bool) -> None:
        import torch

        self.joint_encoder = joint_encoder
        self.latents = data.latents
        self.pos = torch.from_numpy(data.positions.astype(np.int64))
        self.emb = torch.from_numpy(data.embeddings)
        self.levels = None if data.levels is None else torch.from_numpy(data.levels)
        self.targets = torch.from_numpy(data.targets[data.images_of_rows])
        self.betas = torch.from_numpy(data.betas)

    def batch(self, idx):
        from engine.recon.finetune_step import FinetuneBatch

        if self.joint_encoder:
            return FinetuneBatch(self.latents[self.pos[idx]], betas=self.betas[idx], targets=self.targets[idx])
        return FinetuneBatch(self.latents[self.pos[idx]], embeddings=self.emb[idx],
                             levels=None if self.levels is None else self.levels[:, idx])


def _step(t: _Training, batch):
    """One optimisation step (loss scaled for fp16, gradients clipped at 1); returns the step's ``FinetuneLoss``."""
    import torch

    from engine.recon.finetune_step import finetune_loss

    with (torch.autocast(t.gen.device.type, dtype=t.amp_dtype) if t.amp_dtype is not None
          else contextlib.nullcontext()):
        step_loss = finetune_loss(t.parts, batch, t.cfg, t.rng)
    loss, opt = step_loss.total, t.optimizer
    opt.zero_grad(set_to_none=True)
    if t.scaler is not None:
        t.scaler.scale(loss).backward()
        t.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(t.params, 1.0)
        t.scaler.step(opt)
        t.scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(t.params, 1.0)
        opt.step()
    return step_loss


def describe_router_change(router) -> str:
    """One line on how far the timestep router moved from its coarse-to-fine prior (its level slopes)."""
    prior = router.prior_slopes().tolist()
    now = router.slope.detach().cpu().tolist()
    return "timestep router slopes (prior -> learned): " + ", ".join(
        f"level {i} {a:+.2f} -> {b:+.2f}" for i, (a, b) in enumerate(zip(prior, now)))
