"""A generator learned from the user's own images: pixel-space diffusion + a PCA image embedder, trained on the CPU.

For small stimulus sets (digits, letters, patterns; 8 px and up) no pretrained generator fits. ``train_generator_job``
builds one from the subject's **training** stimuli plus its ``prior_images`` (and optional extra images); test stimuli
are never used. Parts (the diffusers classes real generators use, so ``finetune`` and ``reconstruct`` run unchanged):

- embedder: ``PCAImageEmbedder`` (``engine.models.embedders.pca``), whitened principal-component scores of the images;
  a brain encoder of this route predicts them (``--set data.embedder=GEN``);
- UNet: ``UNet2DConditionModel`` directly on the pixels (1 channel for grey sets), channels 16/32/64, attention at the
  coarsest level, the condition tokens also pooled into the timestep embedding (as the demo generator);
- "VAE": ``PixelSpace``, the identity (pixel-space diffusion: no autoencoder to train for tiny images);
- conditioning adapter from the PCA scores to 4 tokens, with the learned null condition (classifier-free guidance).

Training: ε-prediction with min-SNR-γ weights, condition dropout, EMA, the demo generator's noise schedule
(``engine.recon.demo_generator.build_scheduler``). Every ``checkpoint_every`` steps and on cancel the state is written to
``OUT.resume/`` (weights, EMA, optimizer, RNG, step); ``resume=True`` continues to the same result. ``generator.json``
records a fingerprint of the training stimuli: ``finetune``/``reconstruct`` refuse the generator for a subject whose
training stimuli differ (``check_generator_subject``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from engine.errors import Cancelled, CheckpointError, ConfigError, DataError
from engine.events import CancelToken, Checkpoint, EtaClock, Finished, Log, Metric, Progress, Started, ensure_token

KIND = "own"
MANIFEST = "generator.json"
RESUME_SUFFIX = ".resume"


@dataclass(frozen=True)
class OwnGeneratorConfig:
    """Architecture and recipe (stored in ``generator.json``). ``image_size``/``channels`` come from the images."""

    n_components: int = 32
    # Attention only at the coarsest level: self-attention over the 14×14 level made a CPU step 2.7× slower.
    unet_channels: tuple[int, ...] = (16, 32, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    context_dim: int = 64
    n_tokens: int = 4
    steps: int = 800
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    drop_prob: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.995
    shift_px: int = 1  # random translation augmentation (pixels) of the training images
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        for k in ("n_components", "steps", "batch_size", "checkpoint_every", "threads"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"generator train: key '{k}': expected a positive integer, found {v!r}")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "OwnGeneratorConfig":
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


def _torch_module():
    import torch

    class PixelSpace(torch.nn.Module):
        """The identity "VAE" of pixel-space diffusion (grey sets: one channel in, three equal channels out)."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.channels = int(channels)
            self.config = SimpleNamespace(block_out_channels=(self.channels,), scaling_factor=1.0,
                                          latent_channels=self.channels)

        def encode(self, x):
            z = x.mean(1, keepdim=True) if self.channels == 1 else x
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=z))

        def decode(self, z):
            return SimpleNamespace(sample=z.repeat(1, 3, 1, 1) if self.channels == 1 else z)

    return PixelSpace


def pixel_space(channels: int):
    return _torch_module()(channels)


def generator_image_size(h: int, w: int) -> int:
    """The square working size: the larger side rounded up to a multiple of 4 (two downsamplings), at least 8."""
    return max(8, -(-max(h, w) // 4) * 4)


def build_unet(cfg: OwnGeneratorConfig, image_size: int, channels: int):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return UNet2DConditionModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                                layers_per_block=1, block_out_channels=cfg.unet_channels, down_block_types=down,
                                up_block_types=up, cross_attention_dim=cfg.context_dim, attention_head_dim=32,
                                norm_num_groups=16, addition_embed_type="text",
                                addition_embed_type_num_heads=max(1, cfg.context_dim // 16))


def build_adapter(cfg: OwnGeneratorConfig, dim: int):
    from engine.recon.conditioning import ConditioningAdapter, ConditioningConfig

    return ConditioningAdapter(ConditioningConfig(input_shape=(dim,), n_tokens=cfg.n_tokens,
                                                  context_dim=cfg.context_dim, pooled_tokens=cfg.n_tokens))


# ---- which images it learns from --------------------------------------------------------------------------------------


def training_image_rows(subject) -> np.ndarray:
    """Rows of ``subject.images`` shown in training trials and never in a test trial."""
    train = subject.split_images("train")
    split = np.asarray(subject.trials.split)
    test = subject.split_images("test") if np.any(split == 1) else np.zeros(0, np.int64)
    return np.setdiff1d(train, test)


def stimuli_fingerprint(subject) -> str:
    """SHA-256 (16 hex) of the subject's training stimuli: what a generator of this subject was trained on."""
    from engine.models.embedders.cache import images_digest

    return images_digest(np.ascontiguousarray(subject.images[training_image_rows(subject)]))[:16]


def check_generator_subject(generator, subject) -> None:
    """One clear line when ``generator`` (a loaded ``Generator``) was trained on other images than the subject's."""
    info = generator.info if isinstance(generator.info, dict) else {}
    if info.get("kind") != KIND:
        return
    want, have = info.get("stimuli_fingerprint"), stimuli_fingerprint(subject)
    if want != have:
        raise ConfigError(f"{generator.path}: this generator was trained on other images than the training stimuli "
                          f"of subject '{subject.name}' (fingerprint {want}, subject {have}); train one for it with "
                          f"'neurolens generator train --data SUBJECT --out DIR'")


def gather_images(subject, extra=None) -> tuple[np.ndarray, dict]:
    """(uint8 (n, H, W, 3) training images, counts): training stimuli + prior images + ``extra``, minus any image
    identical to a test stimulus (test stimuli are never learned from)."""
    from engine.data.readers.own_images import is_grey

    stim = np.asarray(subject.images[training_image_rows(subject)])
    parts = {"training stimuli": stim}
    if subject.prior_images is not None:
        parts["prior images"] = np.asarray(subject.prior_images)
    if extra is not None:
        parts["extra images"] = np.asarray(extra)
    grey = is_grey(stim)
    for name, p in parts.items():
        if p.shape[1:] != stim.shape[1:] or (name != "training stimuli" and is_grey(p) != grey):
            raise DataError(subject.path or subject.name, f"{name} do not match the stimuli", key=name,
                            expected=f"{stim.shape[1]}×{stim.shape[2]} {'grey' if grey else 'colour'} images",
                            found=f"{p.shape[1]}×{p.shape[2]} {'grey' if is_grey(p) else 'colour'}")
    images = np.concatenate(list(parts.values()))
    test_rows = np.setdiff1d(subject.split_images("test") if np.any(np.asarray(subject.trials.split) == 1)
                             else np.zeros(0, np.int64), training_image_rows(subject))
    dropped = 0
    if len(test_rows):
        test_keys = {np.asarray(subject.images[i]).tobytes() for i in test_rows}
        keep = np.array([im.tobytes() not in test_keys for im in images])
        dropped = int((~keep).sum())
        images = images[keep]
    counts = {k: int(len(v)) for k, v in parts.items()}
    counts["dropped (identical to a test stimulus)"] = dropped
    return images, counts


def images_to_pixels(images_u8: np.ndarray, image_size: int, grey: bool):
    """uint8 (n, H, W, 3) → float (n, C, S, S) in [-1, 1] at the working size (the demo generator's conversion)."""
    from torch.nn import functional as F

    from engine.recon.diffusion_training import images_to_tensor

    x = images_to_tensor(images_u8)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    return x.mean(1, keepdim=True) if grey else x


# ---- the training job ---------------------------------------------------------------------------------------------


def train_generator_job(subject, out_dir, *, extra_images=None, config: OwnGeneratorConfig | None = None,
                        resume: bool = False, overwrite: bool = False, device: str | None = None,
                        cancel: CancelToken | None = None):
    """Job: train a generator on ``subject``'s training stimuli (+ prior/extra images); returns the folder.

    Parameters
    ----------
    subject : Subject or path
    out_dir : path
        The generator folder to write (refused when it exists, unless ``overwrite``).
    extra_images : uint8 (n, H, W, 3) or path, optional
        More unlabeled images (a PNG folder or an ``.npz`` with ``images``).
    resume : bool
        Continue from ``OUT.resume/`` with its saved settings.
    """
    import torch

    from engine.models.embedders.pca import PCAImageEmbedder
    from engine.recon.demo_generator import build_scheduler
    from engine.recon.generator import resolve_device

    cancel = ensure_token(cancel)
    out_dir = Path(out_dir)
    state_dir = out_dir.with_name(out_dir.name + RESUME_SUFFIX)
    cfg = config or OwnGeneratorConfig()
    saved = None
    if resume:
        saved = _read_state(state_dir)
        cfg = OwnGeneratorConfig.from_dict(saved["config"])
    elif out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir}: already exists; choose another --out or pass --overwrite")
    subj, images, counts, grey = _training_images(subject, extra_images)
    size = generator_image_size(images.shape[1], images.shape[2])
    channels = 1 if grey else 3
    dev, _ = resolve_device(device, "fp32")
    torch.manual_seed(cfg.seed)
    if dev.type == "cpu":
        torch.set_num_threads(cfg.threads)
    yield Started(job="generator-train", run_dir=str(out_dir), total=cfg.steps)
    yield Log(f"{len(images)} images ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}), "
              f"{images.shape[1]}×{images.shape[2]} {'grey' if grey else 'colour'} → pixel diffusion at {size} px "
              f"on {dev}")
    if saved is not None and saved["fingerprint"] != stimuli_fingerprint(subj):
        raise CheckpointError(f"{state_dir}: was started on other training stimuli than subject '{subj.name}'")

    embedder = PCAImageEmbedder.fit(images, cfg.n_components, grey=grey)
    emb = torch.from_numpy(embedder.embed(images)).to(dev)
    x_all = images_to_pixels(images, size, grey).to(dev)
    unet = build_unet(cfg, size, channels).to(dev).train()
    adapter = build_adapter(cfg, embedder.dim)
    adapter.set_statistics(emb.cpu().numpy())
    adapter.to(dev).train()
    sched = build_scheduler()
    fingerprint = stimuli_fingerprint(subj)
    loss = yield from _train_diffusion(cfg, unet, adapter, sched, x_all, emb, dev, state_dir=state_dir, saved=saved,
                                       fingerprint=fingerprint, cancel=cancel)
    meta = {"kind": KIND, "schema": 1, "config": cfg.to_dict(), "image_size": size, "channels": channels,
            "stimulus_shape": [int(images.shape[1]), int(images.shape[2])], "grey": grey,
            "embedder": "embedder", "embedder_identity": embedder.identity, "condition": "pooled",
            "stimuli_fingerprint": fingerprint, "subject": subj.name,
            "subject_path": None if subj.path is None else str(subj.path), "images": counts,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_own_generator(out_dir, unet=unet, adapter=adapter, scheduler=sched, embedder=embedder, meta=meta)
    shutil.rmtree(state_dir, ignore_errors=True)
    yield Log(f"generator written to {out_dir}")
    yield Finished(status="done", summary={"out_dir": str(out_dir), "steps": cfg.steps, "images": len(images),
                                           "image_size": size, "loss": float(loss.detach())})
    return out_dir


def _training_images(subject, extra_images):
    """(subject, images, counts per source, whether the stimuli are grey): the subject's training stimuli and prior
    images, plus ``extra_images`` (an array, or a PNG folder / ``.npz`` / subject to read them from)."""
    from engine.data import open_subject
    from engine.data.readers.own_images import is_grey

    subj = subject if hasattr(subject, "images") else open_subject(subject)
    if isinstance(extra_images, (str, Path)):
        from engine.data.demo.builder import resolve_demo_alias
        from engine.data.demo.own_stimuli import load_stimulus_source

        extra_images = load_stimulus_source(resolve_demo_alias(extra_images)).images
    images, counts = gather_images(subj, extra_images)
    grey = is_grey(np.asarray(subj.images[training_image_rows(subj)]))
    return subj, images, counts, grey


def _train_diffusion(cfg: OwnGeneratorConfig, unet, adapter, sched, x_all, emb, dev, *, state_dir: Path, saved,
                     fingerprint: str, cancel: CancelToken):
    """Sub-job: ε-prediction training from the saved state (if any) to ``cfg.steps``, checkpointed to ``state_dir``;
    the weights end as their EMA. Returns the last batch's loss."""
    import torch

    from engine.recon.diffusion_training import min_snr_weights, update_with_ema
    from engine.recon.guidance import drop_mask

    params = list(unet.parameters()) + list(adapter.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    rng = torch.Generator().manual_seed(cfg.seed)
    start = 0
    if saved is not None:
        start = _restore_state(state_dir, saved, unet, adapter, opt, ema, rng)
        yield Log(f"resuming at step {start} of {cfg.steps} from {state_dir}")

    def checkpoint(step: int) -> Path:
        return _write_state(state_dir, step, cfg, fingerprint, unet, adapter, opt, ema, rng)

    clock = EtaClock(cfg.steps, start_step=start)
    n = len(x_all)
    for step in range(start, cfg.steps):
        if cancel.is_set():
            path = checkpoint(step)
            yield Checkpoint(path=str(path), step=step)
            raise Cancelled(f"generator training cancelled at step {step}; continue with --resume", checkpoint=path)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / cfg.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n, (cfg.batch_size,), generator=rng)
        x0 = _shift(x_all[idx.to(dev)], cfg.shift_px, rng)
        noise = torch.randn(x0.shape, generator=rng).to(dev)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=rng).to(dev)
        cond = adapter.drop(adapter(emb[idx.to(dev)]), drop_mask(len(idx), cfg.drop_prob, generator=rng).to(dev))
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=cond.tokens).sample
        w = min_snr_weights(sched, t, cfg.min_snr_gamma)
        loss = (w * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        update_with_ema(opt, params, loss, ema, step, cfg.ema_decay)
        if step % 50 == 0 or step == cfg.steps - 1:
            yield Metric("diffusion_loss", float(loss.detach()), step=step)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            yield Checkpoint(path=str(checkpoint(step + 1)), step=step + 1)
        yield Progress(step + 1, cfg.steps, eta_s=clock.eta(step + 1), stage="diffusion")
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    return loss


def _shift(x, px: int, rng):
    """Random translation by up to ``px`` pixels (edge-padded), one offset per batch (cheap on the CPU)."""
    import torch

    if px <= 0:
        return x
    dy, dx = (torch.randint(-px, px + 1, (2,), generator=rng)).tolist()
    if dy == 0 and dx == 0:
        return x
    pad = torch.nn.functional.pad(x, (px, px, px, px), mode="replicate")
    h, w = x.shape[-2:]
    return pad[..., px + dy:px + dy + h, px + dx:px + dx + w]


def save_own_generator(out_dir, *, unet, adapter, scheduler, embedder, meta: dict) -> Path:
    from engine.atomic import atomic_dir

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        adapter.save(tmp / "adapter")
        embedder.save(tmp / "embedder")
        (tmp / MANIFEST).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out_dir


# ---- resume state -------------------------------------------------------------------------------------------------


def _write_state(state_dir: Path, step: int, cfg, fingerprint, unet, adapter, opt, ema, rng) -> Path:
    import torch
    from safetensors.torch import save_file

    from engine.atomic import atomic_dir

    with atomic_dir(state_dir, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}, str(tmp / "unet.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()},
                  str(tmp / "adapter.safetensors"))
        save_file({f"ema.{i}": e.detach().cpu().contiguous() for i, e in enumerate(ema)}, str(tmp / "ema.safetensors"))
        opt_state = opt.state_dict()
        flat = {}
        for pid, st in opt_state["state"].items():
            for k, v in st.items():
                flat[f"{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
        flat["rng"] = rng.get_state()
        save_file(flat, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": cfg.to_dict(), "fingerprint": fingerprint,
                                                    "param_groups": opt_state["param_groups"]}))
    return state_dir


def _read_state(state_dir: Path) -> dict:
    p = state_dir / "state.json"
    if not p.is_file():
        raise CheckpointError(f"{state_dir}: no interrupted generator training to resume (missing state.json)")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from None


def _restore_state(state_dir: Path, saved: dict, unet, adapter, opt, ema, rng) -> int:
    import torch
    from safetensors.torch import load_file

    try:
        unet.load_state_dict(load_file(str(state_dir / "unet.safetensors")))
        adapter.load_state_dict(load_file(str(state_dir / "adapter.safetensors")))
        e = load_file(str(state_dir / "ema.safetensors"))
        flat = load_file(str(state_dir / "optimizer.safetensors"))
    except (OSError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{state_dir}: damaged resume state ({str(err)[:200]})") from None
    dev = next(unet.parameters()).device
    with torch.no_grad():
        for i, t in enumerate(ema):
            t.copy_(e[f"ema.{i}"].to(dev))
    rng.set_state(flat.pop("rng"))
    state: dict = {}
    for key, v in flat.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v.to(dev) if name != "step" else v
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    return int(saved["step"])


# ---- loading (through engine.recon.generators.load_generator) ----------------------------------------------------------


def is_own_generator(folder) -> bool:
    p = Path(folder) / MANIFEST
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError):
        return False


def load_own_generator(folder, cfg):
    """A ``Generator`` from a folder written by ``train_generator_job`` (``cfg``: a ``GeneratorConfig``)."""
    from diffusers import UNet2DConditionModel

    from engine.errors import ModelFolderError
    from engine.recon.conditioning import ConditioningAdapter
    from engine.recon.generator import Generator, finish_loading, resolve_device
    from engine.recon.model_folder import load_part, read_scheduler_config

    folder = Path(folder).expanduser()
    for part in ("unet", "scheduler", "adapter", "embedder"):
        if not (folder / part).is_dir():
            raise ModelFolderError(folder, f"{part}/", "a generator folder written by 'neurolens generator train'")
    meta = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    unet = load_part(UNet2DConditionModel, folder, "unet")
    adapter = ConditioningAdapter.load(folder / "adapter")
    gen = Generator(kind=KIND, path=str(folder), unet=unet, vae=pixel_space(int(meta["channels"])),
                    scheduler_config=read_scheduler_config(folder), image_size=int(meta["image_size"]),
                    context_dim=int(unet.config.cross_attention_dim), n_tokens=adapter.config.n_tokens,
                    adapter=adapter, embedder=cfg.spec, device=device, dtype=dtype, info=meta)
    return finish_loading(gen, replace(cfg))


def default_generator_folder(subject) -> Path:
    """Where the app trains a subject's generator: ``<subject folder>-generator`` beside the subject."""
    p = Path(subject.path)
    return p.with_name(f"{p.stem}-generator")


def can_resume(out_dir) -> bool:
    """Whether a cancelled or interrupted training of the generator ``out_dir`` left a state to continue from."""
    out_dir = Path(out_dir)
    return (out_dir.with_name(out_dir.name + RESUME_SUFFIX) / "state.json").is_file()


def generator_of_embedder(embedder_spec: str | None) -> str | None:
    """The generator folder whose embedder a run predicts (``data.embedder=GEN``), else None."""
    if not embedder_spec:
        return None
    folder = Path(embedder_spec).expanduser()
    return str(folder) if is_own_generator(folder) else None


def embedding_images(generator, embeddings: np.ndarray) -> np.ndarray | None:
    """The low-level image of a run predicting an own generator's embedding: the predicted principal-component scores
    mapped back to pixels (the linear decoder onto the components of the user's images), ``(n, 3, H, W)`` in [0, 1]
    at the stimulus size; None for other generators."""
    info = generator.info if isinstance(generator.info, dict) else {}
    if info.get("kind") != KIND:
        return None
    from engine.models.embedders.pca import PCAImageEmbedder

    emb = PCAImageEmbedder.load(Path(generator.path) / "embedder")
    x = (np.asarray(embeddings, np.float32).reshape(len(embeddings), -1) * emb.scale) @ emb.components + emb.mean
    h, w = emb.image_shape
    x = np.clip(x, 0.0, 1.0).reshape(len(x), h, w, -1).transpose(0, 3, 1, 2)
    return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x
