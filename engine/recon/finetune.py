"""Fine-tuning the decoder of a run: conditioning adapter (+ LoRA or cross-attention) on the run's encoder outputs.

``finetune_job(run_dir, generator="demo", config=FinetuneConfig(...), cancel=...)`` trains, on the subject's training
trials, what turns this run's predicted embeddings into images:

- the conditioning adapter (always; started from the demo generator's own adapter when the run predicts the same
  embedding, else fresh) and its learned null condition, with the condition dropped with ``drop_prob`` (0.1);
- optionally the UNet: ``unet="lora"`` adds peft LoRA of rank ``lora_rank`` on the attention projections
  (``to_q``, ``to_k``, ``to_v``, ``to_out.0``; plus ``ff.net.0.proj``, ``ff.net.2`` with ``lora_ff``), as MoRE-Brain;
  ``unet="cross_attn"`` trains the cross-attention layers (``attn2``, ``norm2``) as upstream NeuroLens / MinD-Vis;
- optionally the brain encoder itself (``joint_encoder``), with the auxiliary alignment loss
  ``align_weight * (1 - cos(predicted, true embedding))`` (upstream NeuroLens "clipA": 0.03);
- for a Mixture-of-Experts encoder, a ``TimestepRouter`` over its expert levels;
- a ``BlurryRidge`` for the low-level image when the encoder has no blurry head.

Loss: ε-MSE on the VAE latents of the seen images, with min-SNR-γ weights when ``min_snr_gamma`` is set.
Everything is written to ``RUN_DIR/decoder/`` (atomically, after every epoch and when cancelled: a ``Checkpoint``
event each time). ``finetune_job(..., resume=True)`` continues from that state with the saved settings, as training
resumes: the result equals an uninterrupted run's (optimizer, RNG and batch order are restored)::

    decoder.json        generator, input shape, embedder, UNet mode, LoRA settings, config, steps
    adapter/            ConditioningAdapter (config.json + model.safetensors)
    unet_lora.safetensors | unet_cross_attn.safetensors   (when the UNet trains)
    router/             TimestepRouter (MoE encoders)
    encoder/            the jointly trained encoder (joint_encoder)
    blurry.npz          BlurryRidge
    resume/             optimizer.safetensors, rng.safetensors, state.json (epoch, batch, batch order)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from engine.errors import Cancelled, CheckpointError, ConfigError
from engine.events import CancelToken, Checkpoint, EtaClock, Finished, Log, Metric, Progress, Started, ensure_token
from engine.jsonfile import field, read_object  # bounded, type-checked JSON

DECODER_DIR = "decoder"
DECODER_FILE = "decoder.json"
RESUME_DIR = "resume"
UNET_MODES = ("frozen", "lora", "cross_attn")
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_FF_TARGETS = ("ff.net.0.proj", "ff.net.2")


@dataclass(frozen=True)
class FinetuneConfig:
    """Decoder fine-tuning settings.

    Parameters
    ----------
    generator : str
        ``"demo"`` or a local SD-1.5 / SDXL folder.
    epochs, batch_size : int
    lr : float
        Learning rate of the adapter.
    router_lr : float
        Learning rate of the timestep router's slopes (its query and keys train at ``lr``). The slopes get a weak
        gradient through the mix of levels: at the adapter's rate they moved 2.0 -> 1.994 in a demo fine-tuning, i.e.
        the router stayed at its prior.
    unet : {"frozen", "lora", "cross_attn"}
    lora_rank : int
    lora_alpha : float or None
        LoRA scaling numerator (default: the rank, i.e. scale 1, as MoRE-Brain).
    lora_ff : bool
        Also put LoRA on the feed-forward projections.
    unet_lr : float
        Learning rate of the LoRA / cross-attention weights (MoRE-Brain: 1e-4).
    drop_prob : float
        Classifier-free-guidance condition dropout.
    min_snr_gamma : float or None
        Min-SNR-γ loss weighting (MoRE-Brain: 1.5; None = plain MSE).
    joint_encoder : bool
        Train the brain encoder too (torch encoders only), with ``encoder_lr`` and the alignment loss.
    align_weight : float
        Weight of ``1 - cos(predicted, true embedding)`` when the encoder trains.
    router : bool
        Learn a timestep router over the levels of a Mixture-of-Experts encoder.
    max_steps : int or None
        Stop after this many steps (for quick runs).
    dtype : {"fp32", "bf16", "fp16", "auto"}
        Precision of the generator while training (fp32 by default: the trained weights stay fp32).
    ip_adapter : str or None
        IP-Adapter weights for an SD folder (``"auto"``: the folder's ``ip_adapter/*.safetensors`` when it has one;
        None: no image-embedding path). The adapter then also predicts the IP-Adapter image embedding.
    """

    generator: str = "demo"
    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-4
    unet: Literal["frozen", "lora", "cross_attn"] = "frozen"
    lora_rank: int = 4
    lora_alpha: float | None = None
    lora_ff: bool = False
    unet_lr: float = 1e-4
    drop_prob: float = 0.1
    min_snr_gamma: float | None = 5.0
    joint_encoder: bool = False
    encoder_lr: float = 1e-5
    align_weight: float = 0.03
    router: bool = True
    router_lr: float = 2e-2
    blurry_alpha: float = 1.0
    seed: int = 0
    device: str | None = None
    dtype: str = "fp32"
    max_steps: int | None = None
    ip_adapter: str | None = "auto"

    def __post_init__(self) -> None:
        if self.unet not in UNET_MODES:
            raise ConfigError(f"finetune: key 'unet': expected one of {list(UNET_MODES)}, found {self.unet!r}")
        for key in ("epochs", "batch_size", "lora_rank"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"finetune: key '{key}': expected a positive integer, found {v!r}")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ConfigError(f"finetune: key 'drop_prob': expected a number in [0, 1), found {self.drop_prob!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FinetuneResult:
    decoder_dir: str
    steps: int
    loss: float


@dataclass
class Decoder:
    """What reconstruction needs on top of a run's encoder: generator, adapter, optional router/blurry/encoder."""

    generator: object
    adapter: object
    router: object = None
    blurry: object = None
    encoder_dir: Path | None = None
    info: dict = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------------
# UNet training modes
# --------------------------------------------------------------------------------------------------------------------


def lora_config(rank: int, alpha: float | None = None, ff: bool = False):
    from peft import LoraConfig

    targets = list(LORA_TARGETS) + (list(LORA_FF_TARGETS) if ff else [])
    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights="gaussian",
                      target_modules=targets)


def add_lora(unet, rank: int, alpha: float | None = None, ff: bool = False) -> list:
    """Add a peft LoRA adapter to the UNet's attention (and feed-forward) projections; return its parameters."""
    unet.add_adapter(lora_config(rank, alpha, ff))
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return params


def cross_attn_parameters(unet) -> dict:
    """The cross-attention layers (``attn2``) and their norms (``norm2``) of every transformer block."""
    return {n: p for n, p in unet.named_parameters()
            if ".transformer_blocks." in n and (".attn2." in n or ".norm2." in n)}


# --------------------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------------------


def _open_run_subject(run, subject):
    from engine.data import open_subject
    from engine.data.subject import Subject

    if isinstance(subject, Subject):
        return subject
    if subject is None:
        try:
            subject = run.provenance()["subject"]["path"]
        except (OSError, KeyError, TypeError, ValueError):
            subject = None
        if not subject:
            raise CheckpointError(f"{run.path}: provenance.json does not name the subject's path; pass the subject")
    return open_subject(subject)


def encoder_outputs(model, betas: np.ndarray, subject_key: str, target_shape, *, batch_size: int = 256,
                    device=None):
    """(embeddings (n, *shape), levels (n_levels, n, *shape) or None, blurry (n, 3, H, W) or None) of a model.

    A torch encoder runs on ``device`` (it is moved there; default: where it is) and its outputs come back as numpy.
    """
    import torch

    from engine.train.device import to_device, to_numpy

    if hasattr(model, "coef_"):  # RidgeCV
        return model.predict(betas).reshape(len(betas), *target_shape).astype(np.float32), None, None
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    embs, levels, blurs = [], [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(betas), batch_size):
            x = to_device(np.asarray(betas[s:s + batch_size], np.float32), dev)
            out = model(x, subject=subject_key)
            embs.append(to_numpy(out.embedding, np.float32))
            if "levels" in out.extras:
                levels.append(to_numpy(out.extras["levels"], np.float32))
            if "blurry" in out.extras:
                blurs.append(to_numpy(out.extras["blurry"], np.float32))
    return (np.concatenate(embs), np.concatenate(levels, axis=1) if levels else None,
            np.concatenate(blurs) if blurs else None)


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

    from engine.recon.conditioning import ConditioningAdapter
    from engine.recon.finetune_step import FinetuneBatch, FinetuneParts, finetune_loss
    from engine.recon.generators import GeneratorConfig, load_generator
    from engine.recon.own_generator import check_generator_subject
    from engine.recon.timestep_router import TimestepRouter
    from engine.train.dataset import split_groups
    from engine.train.predict import load_encoder, load_normalizer, model_info
    from engine.train.run import Run
    from engine.train.targets import target_embeddings

    cfg = config or FinetuneConfig()
    if generator is not None:
        cfg = dataclasses.replace(cfg, generator=str(generator))
    cancel = ensure_token(cancel)
    run = Run.open(run_dir)
    info = model_info(run)
    out_dir = run.path / DECODER_DIR
    saved_state = None
    if resume:
        saved_meta, saved_state = read_resume_state(out_dir)
        cfg = FinetuneConfig(**saved_meta["config"])
    yield Started(job="finetune", run_dir=str(run.path))
    subj = _open_run_subject(run, subject)
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)

    gen = load_generator(GeneratorConfig(spec=cfg.generator, device=cfg.device, dtype=cfg.dtype,
                                         ip_adapter=cfg.ip_adapter))
    check_generator_subject(gen, subj)
    yield Log(f"generator {gen.kind} ({gen.path}), {gen.image_size}px, context {gen.n_tokens}×{gen.context_dim}"
              + (f", IP-Adapter {gen.info['ip_adapter']}" if gen.image_embed_dim else ""))

    # ---- training data: the run's encoder outputs on the training trials, and the seen images' latents -----------
    norm = load_normalizer(run)
    _, _, rows = split_groups(subj, "train")
    betas = norm.apply(subj.betas, rows)
    images_of_rows = np.asarray(subj.trials.image_index)[rows].astype(np.int64)
    shape = tuple(info["target_shape"])
    encoder = load_encoder(run)
    if cfg.joint_encoder and hasattr(encoder, "coef_"):
        raise ConfigError("finetune: joint_encoder needs a torch encoder (mlp, mbm, moe), found a ridge run")
    emb, levels, enc_blurry = encoder_outputs(encoder, betas, info["subject"], shape, device=gen.device)
    targets = target_embeddings(subj.images, info["embedder"], info["target"]).astype(np.float32)
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
    lat = torch.cat(parts)

    # ---- what trains ----------------------------------------------------------------------------------------------
    same_space = (gen.adapter is not None and tuple(gen.adapter.config.input_shape) == shape
                  and gen.embedder == info["embedder"])
    if same_space:
        adapter = copy.deepcopy(gen.adapter).float()
        yield Log("adapter starts from the generator's own image-embedding adapter")
    else:
        adapter = ConditioningAdapter(gen.adapter_config(shape))
    adapter.set_statistics(emb)
    adapter.to(gen.device).train()
    router = None
    if levels is not None and cfg.router:
        router = TimestepRouter(levels.shape[0], num_train_timesteps=1000).to(gen.device)
        yield Log(f"timestep router over {levels.shape[0]} expert levels")
    groups = [{"params": list(adapter.parameters()), "lr": cfg.lr}]
    if router is not None:
        # only the slopes (one per level: the schedule's shape) at router_lr; the time query and level keys at the
        # adapter's rate, or the query's high-frequency sinusoid features make the learned weights jitter across t
        groups.append({"params": [router.slope], "lr": cfg.router_lr})
        groups[0]["params"] += [p for n, p in router.named_parameters() if n != "slope"]
    unet = gen.unet
    unet_params: list = []
    if cfg.unet == "lora":
        unet_params = add_lora(unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_ff)
    elif cfg.unet == "cross_attn":
        named = cross_attn_parameters(unet)
        if not named:
            raise ConfigError("finetune: unet 'cross_attn': the generator's UNet has no attn2 layers")
        unet_params = list(named.values())
        for p in unet_params:
            p.requires_grad_(True)
    if unet_params:
        groups.append({"params": unet_params, "lr": cfg.unet_lr})
    if cfg.joint_encoder:
        encoder.train()
        groups.append({"params": [p for p in encoder.parameters() if p.requires_grad], "lr": cfg.encoder_lr})
    # The trained weights stay fp32 in a bf16/fp16 generator (an fp32 master copy for AdamW, as diffusers' training
    # scripts do); the frozen rest computes in the generator's precision under autocast; fp16 also needs loss scaling.
    amp_dtype = gen.dtype if gen.dtype != torch.float32 else None
    for p in unet_params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(groups, weight_decay=1e-2, fused=True if gen.device.type == "cuda" else None)
    params = [p for g in groups for p in g["params"]]
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    from diffusers import DDPMScheduler

    # The generator's own noise schedule (an SD folder ships a PNDM config; the betas are what matter here).
    sched = DDPMScheduler.from_config({k: v for k, v in gen.scheduler_config.items() if not k.startswith("_")})
    parts = FinetuneParts(gen, sched, adapter, router, encoder if cfg.joint_encoder else None, info["subject"])
    pos_t = torch.from_numpy(pos.astype(np.int64))
    emb_t = torch.from_numpy(emb)
    lev_t = None if levels is None else torch.from_numpy(levels)
    tgt_t = torch.from_numpy(targets[images_of_rows])
    betas_t = torch.from_numpy(betas)
    n = len(rows)
    per_epoch = max(1, n // cfg.batch_size)
    total = per_epoch * cfg.epochs if cfg.max_steps is None else min(per_epoch * cfg.epochs, cfg.max_steps)
    step, last_loss, saved = 0, float("nan"), None
    start_epoch, start_batch, saved_order = 0, 0, None
    if saved_state is not None:
        _restore_training_state(out_dir, saved_state, adapter=adapter, router=router, unet=unet, unet_mode=cfg.unet,
                                encoder=encoder if cfg.joint_encoder else None, optimizer=opt, rng=rng)
        step, start_epoch, start_batch = saved_state["step"], saved_state["epoch"], saved_state["batch"]
        saved_order = saved_state.get("order")
        last_loss = saved_state.get("loss", last_loss)
        yield Log(f"resuming at step {step} of {total} (epoch {start_epoch + 1}, batch {start_batch})")
    clock = EtaClock(total, start_step=step)

    def save(epoch: int, batch: int, order) -> Path:
        position = {"step": step, "epoch": epoch, "batch": batch, "loss": last_loss, "total": total,
                    "order": None if order is None else order.tolist()}
        return _save_decoder(out_dir, cfg, gen, adapter, router, encoder if cfg.joint_encoder else None,
                             info, step, emb, enc_blurry, subj.images, images_of_rows, levels, rows,
                             optimizer=opt, rng=rng, position=position)

    epoch, b, order = start_epoch, start_batch, None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if step >= total:
                break
            # The batch order is drawn at the start of an epoch; a resumed epoch reuses the saved one.
            order = (torch.tensor(saved_order, dtype=torch.int64) if epoch == start_epoch and saved_order
                     else torch.randperm(n, generator=rng))
            for b in range(start_batch if epoch == start_epoch else 0, per_epoch):
                if step >= total:
                    break
                cancel.raise_if_set()
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                if cfg.joint_encoder:
                    batch = FinetuneBatch(lat[pos_t[idx]], betas=betas_t[idx], targets=tgt_t[idx])
                else:
                    batch = FinetuneBatch(lat[pos_t[idx]], embeddings=emb_t[idx],
                                          levels=None if lev_t is None else lev_t[:, idx])
                with (torch.autocast(gen.device.type, dtype=amp_dtype) if amp_dtype is not None
                      else contextlib.nullcontext()):
                    step_loss = finetune_loss(parts, batch, cfg, rng)
                loss, diffusion, align = step_loss.total, step_loss.diffusion, step_loss.align
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                step += 1
                last_loss = float(loss.detach())
                yield Metric("diffusion_loss", float(diffusion.detach()), step=step)
                if align is not None:  # the CLIP-alignment term on its own (unweighted), and the total optimised
                    yield Metric("align_loss", float(align.detach()), step=step)
                    yield Metric("loss", last_loss, step=step)
                yield Progress(step, total, eta_s=clock.eta(step), stage=f"finetune epoch {epoch + 1}")
            else:
                b = per_epoch
            saved = save(epoch + 1, 0, None) if b >= per_epoch else save(epoch, b, order)
            yield Checkpoint(path=str(saved), step=step)
    except Cancelled as e:
        # Checked before batch ``b`` touched any state: save the position so ``resume`` redoes exactly that batch.
        saved = save(epoch, b, order) if step > 0 else saved
        raise Cancelled(str(e), checkpoint=None if saved is None else str(saved)) from None
    if router is not None:
        yield Log(describe_router_change(router))
    yield Finished(status="done", summary={"step": step, "diffusion_loss": last_loss})
    return FinetuneResult(str(out_dir), step, last_loss)


def describe_router_change(router) -> str:
    """One line on how far the timestep router moved from its coarse-to-fine prior (its level slopes)."""
    prior = router.prior_slopes().tolist()
    now = router.slope.detach().cpu().tolist()
    return "timestep router slopes (prior -> learned): " + ", ".join(
        f"level {i} {a:+.2f} -> {b:+.2f}" for i, (a, b) in enumerate(zip(prior, now)))


def _save_decoder(out_dir: Path, cfg: FinetuneConfig, gen, adapter, router, encoder, info: dict, step: int,
                  emb: np.ndarray, enc_blurry, images, images_of_rows, levels, rows, *, optimizer=None, rng=None,
                  position: dict | None = None) -> Path:
    from engine.atomic import atomic_dir, atomic_save_safetensors, atomic_write_json
    from engine.recon.blurry import BlurryRidge
    from engine.train.checkpoint import capture_rng, flatten_optimizer_state

    with atomic_dir(out_dir, overwrite=True) as tmp:
        if position is not None:
            rng_js, rng_t = capture_rng(rng)
            opt_t, opt_meta = flatten_optimizer_state(optimizer.state_dict())
            (tmp / RESUME_DIR).mkdir()
            atomic_save_safetensors(tmp / RESUME_DIR / "optimizer.safetensors", opt_t)
            atomic_save_safetensors(tmp / RESUME_DIR / "rng.safetensors", rng_t)
            atomic_write_json(tmp / RESUME_DIR / "state.json", {**position, "rng": rng_js, "optimizer": opt_meta})
        adapter.save(tmp / "adapter")
        lora = None
        if cfg.unet == "lora":
            from peft.utils import get_peft_model_state_dict

            atomic_save_safetensors(tmp / "unet_lora.safetensors", get_peft_model_state_dict(gen.unet))
            lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "ff": cfg.lora_ff}
        elif cfg.unet == "cross_attn":
            atomic_save_safetensors(tmp / "unet_cross_attn.safetensors",
                                    {k: v.detach() for k, v in cross_attn_parameters(gen.unet).items()})
        if router is not None:
            router.save(tmp / "router")
        if encoder is not None:
            encoder.save(tmp / "encoder", overwrite=False)
        if enc_blurry is None:
            sel = np.random.default_rng(0).permutation(len(rows))[:4000]
            BlurryRidge(cfg.blurry_alpha).fit(emb[sel], take_images(images, images_of_rows[sel])).save(
                tmp / "blurry.npz")
        atomic_write_json(tmp / DECODER_FILE, {
            "schema": 1, "generator": gen.path, "generator_kind": gen.kind,
            "input_shape": list(adapter.config.input_shape),
            "embedder": info.get("embedder"), "target": info.get("target"), "unet": cfg.unet, "lora": lora,
            "ip_adapter": gen.info.get("ip_adapter") if gen.image_embed_dim else None,
            "router": router is not None, "joint_encoder": encoder is not None, "config": cfg.to_dict(),
            "steps": step, "complete": bool(position is None or position["step"] >= position["total"]),
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return out_dir


def read_resume_state(decoder_dir: Path) -> tuple[dict, dict]:
    """(decoder.json, resume/state.json) of an interrupted fine-tuning; ``CheckpointError`` naming what is missing."""
    for name in (DECODER_FILE, f"{RESUME_DIR}/state.json", f"{RESUME_DIR}/optimizer.safetensors",
                 f"{RESUME_DIR}/rng.safetensors"):
        if not (decoder_dir / name).is_file():
            raise CheckpointError(f"{decoder_dir}: nothing to resume: missing {name} (run 'neurolens finetune' "
                                  "without --resume)")
    try:
        meta = read_object(decoder_dir / DECODER_FILE)
        state = read_object(decoder_dir / RESUME_DIR / "state.json")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{decoder_dir}: damaged fine-tuning state ({e})") from None
    field(meta, "config", dict, decoder_dir / DECODER_FILE, error=CheckpointError)
    sp = decoder_dir / RESUME_DIR / "state.json"
    for key in ("step", "epoch", "batch"):
        if field(state, key, int, sp, error=CheckpointError) < 0:
            raise CheckpointError(f"{sp}: key '{key}': expected an integer >= 0, found {state[key]}")
    field(state, "order", (list, type(None)), sp, default=None, error=CheckpointError)
    field(state, "optimizer", (dict, type(None)), sp, default=None, error=CheckpointError)
    field(state, "rng", dict, sp, error=CheckpointError)
    return meta, state


def _restore_training_state(decoder_dir: Path, state: dict, *, adapter, router, unet, unet_mode: str, encoder,
                            optimizer, rng) -> None:
    """Load the trained weights, optimizer and RNG states saved by ``_save_decoder`` into the freshly built parts."""
    import torch
    from safetensors.torch import load_file

    from engine.recon.conditioning import ConditioningAdapter
    from engine.recon.timestep_router import TimestepRouter
    from engine.train.checkpoint import restore_rng, unflatten_optimizer_state

    adapter.load_state_dict(ConditioningAdapter.load(decoder_dir / "adapter").state_dict())
    if router is not None:
        router.load_state_dict(TimestepRouter.load(decoder_dir / "router").state_dict())
    if unet_mode == "lora":
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(unet, load_file(str(decoder_dir / "unet_lora.safetensors")))
    elif unet_mode == "cross_attn":
        own = cross_attn_parameters(unet)
        with torch.no_grad():
            for k, v in load_file(str(decoder_dir / "unet_cross_attn.safetensors")).items():
                own[k].copy_(v)
    if encoder is not None:
        from engine.models.registry import load_encoder_folder

        encoder.load_state_dict(load_encoder_folder(decoder_dir / "encoder").state_dict())
    optimizer.load_state_dict(unflatten_optimizer_state(
        load_file(str(decoder_dir / RESUME_DIR / "optimizer.safetensors")), state["optimizer"]))
    restore_rng(state["rng"], load_file(str(decoder_dir / RESUME_DIR / "rng.safetensors")), rng)


def take_images(images, index: np.ndarray) -> np.ndarray:
    """``images[index]`` for any index order (lazy arrays are read once per distinct image, in ascending order)."""
    uniq, inv = np.unique(np.asarray(index, np.int64), return_inverse=True)
    return np.asarray(images[uniq])[inv]


# --------------------------------------------------------------------------------------------------------------------
# Loading a decoder back
# --------------------------------------------------------------------------------------------------------------------


def load_decoder(run_dir, generator_config=None, *, info: dict | None = None) -> Decoder:
    """The fine-tuned decoder of a run (``RUN_DIR/decoder/``), or, when there is none, the demo generator's own
    adapter if the run predicts demo-embedder vectors of the generator's input shape (zero-shot).

    Parameters
    ----------
    generator_config : GeneratorConfig, optional
        Device/dtype/compile options; its ``spec`` overrides the decoder's generator when not ``"demo"``.
    """
    import torch
    from safetensors.torch import load_file

    from engine.recon.blurry import BlurryRidge
    from engine.recon.conditioning import ConditioningAdapter
    from engine.recon.generators import GeneratorConfig, load_generator
    from engine.recon.timestep_router import TimestepRouter

    folder = Path(run_dir) / DECODER_DIR
    gcfg = generator_config or GeneratorConfig()
    if not (folder / DECODER_FILE).is_file():
        gen = load_generator(gcfg)
        shape = tuple((info or {}).get("target_shape", ()))
        if gen.adapter is not None and shape == tuple(gen.adapter.config.input_shape) \
                and (info or {}).get("embedder") == gen.embedder:
            return Decoder(gen, gen.adapter, info={"zero_shot": True})
        raise ConfigError(f"{run_dir}: no fine-tuned decoder (missing {DECODER_DIR}/{DECODER_FILE}) and the "
                          f"generator cannot read this run's embeddings directly; run "
                          f"'neurolens finetune {run_dir}' first")
    meta = read_object(folder / DECODER_FILE)
    spec = meta["generator"] if gcfg.spec == "demo" else gcfg.spec
    # The decoder was trained with (or without) that IP-Adapter file: load exactly that.
    gen = load_generator(dataclasses.replace(gcfg, spec=spec, ip_adapter=meta.get("ip_adapter")))
    adapter = ConditioningAdapter.load(folder / "adapter").to(gen.device).eval()
    if meta.get("unet") == "lora":
        from peft import set_peft_model_state_dict

        lora = meta["lora"]
        gen.unet.add_adapter(lora_config(lora["rank"], lora.get("alpha"), lora.get("ff", False)))
        set_peft_model_state_dict(gen.unet, load_file(str(folder / "unet_lora.safetensors")))
        gen.unet.to(gen.device, gen.dtype).requires_grad_(False)
    elif meta.get("unet") == "cross_attn":
        state = load_file(str(folder / "unet_cross_attn.safetensors"))
        own = cross_attn_parameters(gen.unet)
        if set(state) != set(own):
            raise CheckpointError(f"{folder}: unet_cross_attn.safetensors does not match the generator's UNet")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v.to(own[k].dtype))
    router = TimestepRouter.load(folder / "router").to(gen.device).eval() if (folder / "router").is_dir() else None
    blurry = BlurryRidge.load(folder / "blurry.npz") if (folder / "blurry.npz").is_file() else None
    enc = folder / "encoder" if (folder / "encoder").is_dir() else None
    return Decoder(gen, adapter, router=router, blurry=blurry, encoder_dir=enc, info=meta)
