"""The reconstruction job: a run's predicted embeddings → images, written with ``index.json`` (``engine.recon.index``).

``reconstruct_job(run_dir, ReconstructConfig(samples=K, guidance=S, steps=N, ...), subject=..., split="test",
out_dir=...)`` (the settings: ``engine.recon.reconstruct_config``)

1. predicts the embedding of every image of the split (``TrainedModel``; test repeats: the single-trial predictions
   averaged in embedding space, ``average_embeddings``, as MindEyeV2 and MoRE-Brain do, or the betas averaged first,
   ``average_voxels``);
2. loads the run's decoder (``Decoder.open``: ``RUN_DIR/decoder/`` after ``finetune``; without one the demo
   generator reads demo-embedder predictions directly);
3. samples ``K`` images per image with classifier-free guidance against the learned null condition (one seed per
   image and sample, so a result does not depend on batching), optionally from the blurry image (img2img);
4. writes ``samples/``, ``gt/``, ``blurry/``, ``index.json`` (its ``settings``: the config, with the generator used
   and the image size) and ``embeddings.npz`` into ``out_dir`` atomically (a cancelled job leaves no half-written
   folder).

Events: ``Started``, ``Progress`` per denoising step, ``Preview("denoise", step, image, trial=image_index)`` of the
first image of each batch every ``preview_every`` steps, ``Log``, ``Finished``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, DataError
from engine.events import CancelToken, EtaClock, Finished, Log, Preview, Progress, Started, ensure_token
from engine.recon.decoder import Decoder, has_decoder
from engine.recon.own_generator import check_generator_subject, embedding_images
from engine.recon.pixel_decoder import is_pixel_run, predicted_images, write_pixel_reconstruction
from engine.recon.reconstruct_config import REPEAT_MODES, ReconstructConfig
from engine.train.trained_model import TrainedModel


@dataclass(frozen=True)
class ReconResult:
    out_dir: str
    n_images: int
    n_samples: int


@dataclass
class BrainPrediction:
    """Per image of the split: predicted embeddings, optional per-level stacks and blurry images, true targets."""

    image_index: np.ndarray  # (n,)
    trials: list  # per image, the trial rows combined
    embeddings: np.ndarray  # (n, *shape)
    targets: np.ndarray  # (n, *shape)
    levels: np.ndarray | None = None  # (n_levels, n, *shape)
    blurry: np.ndarray | None = None  # (n, 3, H, W) in [0, 1]


def predict_split(model: TrainedModel, split: str, repeat_mode: str, *, encoder_dir: Path | None = None,
                  want_levels: bool = False, device="cpu") -> BrainPrediction:
    """The model's predictions for ``split`` (``TrainedModel.predict`` unless a jointly trained encoder or the
    per-level outputs are needed); a torch encoder runs on ``device``."""
    from engine.train.dataset import average_groups

    mode = REPEAT_MODES.get(repeat_mode)
    if mode is None:
        raise ConfigError(f"repeat_mode: expected one of {list(REPEAT_MODES)}, found {repeat_mode!r}")
    image_index, groups, rows = model.split(split)
    trials = [[int(rows[g]) for g in grp if g >= 0] for grp in groups]
    if encoder_dir is None and not want_levels:
        p = model.predict(split, mode, device=str(device))
        if not np.array_equal(p.image_index, image_index):
            s = model.subject
            raise DataError(s.path or s.name, "prediction rows do not match the split's images")
        return BrainPrediction(p.image_index, trials, p.embeddings, p.targets, None, p.blurry)
    encoder = None
    if encoder_dir is not None:
        from engine.models.registry import load_encoder_folder

        encoder = load_encoder_folder(encoder_dir).eval()
    betas = model.betas(rows)
    if mode == "average_voxels":
        out = model.outputs(average_groups(betas, groups), encoder=encoder, device=device)
        emb, levels, blur = out.embeddings, out.levels, out.blurry
    else:
        out = model.outputs(betas, encoder=encoder, device=device)
        emb = average_groups(out.embeddings, groups)
        levels = None if out.levels is None else np.stack([average_groups(lv, groups) for lv in out.levels])
        blur = None if out.blurry is None else average_groups(out.blurry, groups)
    targets = model.targets()[image_index]
    return BrainPrediction(image_index, trials, emb.astype(np.float32), targets.astype(np.float32), levels, blur)


def _stale_demo_adapter(decoder) -> str | None:
    """A warning when the demo generator's own adapter was trained for another build of the demo embedder."""
    gen = decoder.generator
    trained_for = gen.info.get("embedder_identity") if isinstance(gen.info, dict) else None
    if not decoder.info.get("zero_shot") or gen.kind != "demo" or not trained_for:
        return None
    from engine.models.embedders.base import file_digest
    from engine.models.embedders.demo import CONFIG_FILE, WEIGHTS_FILE, default_folder

    folder = default_folder()
    try:
        current = f"demo:{file_digest([folder / CONFIG_FILE, folder / WEIGHTS_FILE])}"
    except OSError:
        return None
    if current == trained_for:
        return None
    return ("the demo generator's adapter was trained for another build of the demo image embedder "
            f"({trained_for}, now {current}); run 'neurolens finetune' on this run, or refit it with "
            "python resources/build/build_demo_generator.py --refit-adapter")


def _png(path: Path, image: np.ndarray) -> str:
    """Write one image; three equal channels are written as a grey PNG (grey stimuli stay grey)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[-1] == 3 and (image[..., 0] == image[..., 1]).all() \
            and (image[..., 1] == image[..., 2]).all():
        image = np.ascontiguousarray(image[..., 0])
    Image.fromarray(image).save(path, format="PNG")
    return str(path)


def _kept_rows(pred: BrainPrediction, trials, subj, split: str) -> np.ndarray:
    """Rows of ``pred`` to reconstruct: all, or the images whose trials include one of ``trials``.

    Trials outside the split are refused, never dropped: a table of fewer images than asked would read as the asked set.
    """
    keep = np.arange(len(pred.image_index))
    if trials is None:
        return keep
    wanted = {int(t) for t in trials}
    in_split = sorted(int(t) for ts in pred.trials for t in ts)
    outside = sorted(wanted - set(in_split))
    if outside:
        shown = ", ".join(map(str, outside[:12])) + (f" … ({len(outside)} rows)" if len(outside) > 12 else "")
        raise DataError(subj.path or subj.name, f"trial rows {shown} are not in split '{split}' (its trials are rows "
                                                f"{', '.join(map(str, in_split[:5]))}, …; see the Trials panel)",
                        key="trials")
    return np.array([i for i, ts in enumerate(pred.trials) if wanted & set(ts)], np.int64)


def sample_seed(seed: int, image_index: int, k: int) -> int:
    """The noise seed of sample ``k`` of image ``image_index`` (independent of batching)."""
    return (int(seed) * 1_000_003 + int(image_index) * 1009 + int(k)) % (2**63 - 1)


def sampling_batch(gen) -> int:
    """Samples denoised together by default: 8 on the CPU (larger batches gain nothing there, see
    docs/benchmarks.md); on a GPU enough to fill it (the UNet reads 2 × batch latents with guidance), up to 256 for
    small latents and 32 at SD-1.5's 64 × 64."""
    if getattr(gen.device, "type", "cpu") != "cuda":
        return 8
    return int(max(8, min(256, 2**17 // (gen.latent_size * gen.latent_size))))




def reconstruct_job(run_dir, config: ReconstructConfig | None = None, *, subject=None, split: str = "test",
                    trials=None, out_dir=None, overwrite: bool | None = None, method: str | None = None,
                    cancel: CancelToken | None = None):
    """Job: reconstruct the images of ``split`` from a run (see the module docstring). Returns ``ReconResult``.

    Parameters
    ----------
    run_dir : path
        A finished encoder run (with ``decoder/`` after ``finetune``).
    config : ReconstructConfig
        How: samples, guidance, steps, sampler, seed, repeat mode, img2img, source, generator, device...
    subject : path or Subject, optional
        Default: the subject named in the run's provenance.
    trials : sequence of int, optional
        Only the images whose trials include one of these trial rows.
    out_dir : path, optional
        Default ``RUN_DIR/recon/<split>``.
    overwrite : bool, optional
        Replace an existing reconstruction folder (one with ``index.json``; any other folder is refused), only once
        the new one is complete. Default: True for the default folder, False for an explicit ``out_dir``.
    method : str, optional
        The label of the folder in tables and plots (default: the run's name, kind and generator).
    """
    from engine.atomic import check_replaceable
    from engine.recon.index import INDEX_FILE

    cfg = config or ReconstructConfig()
    cancel = ensure_token(cancel)
    scfg = cfg.sampler_config()
    model = TrainedModel.open(run_dir, subject)
    run = model.run
    if overwrite is None:
        overwrite = out_dir is None
    out_dir = Path(out_dir) if out_dir is not None else run.recon_folder(split)
    check_replaceable(out_dir, marker=INDEX_FILE, kind="reconstruction", overwrite=overwrite,
                      protect=[run.path, subject if isinstance(subject, (str, Path)) else None])
    yield Started(job="reconstruct", run_dir=str(run.path))
    subj = model.subject
    check_replaceable(out_dir, marker=INDEX_FILE, kind="reconstruction", overwrite=overwrite, protect=[subj.path])
    if is_pixel_run(model.info) and cfg.generator is None and not has_decoder(run):
        pred = predict_split(model, split, cfg.repeat_mode)
        keep = _kept_rows(pred, trials, subj, split)
        yield from write_pixel_reconstruction(run, model.info, subj, pred, keep, out_dir, split=split,
                                              repeat_mode=cfg.repeat_mode, method=method, png=_png)
        return ReconResult(str(out_dir), len(keep), len(keep))
    decoder = Decoder.open(run, cfg.generator_config(), info=model.info)
    gen = decoder.generator
    check_generator_subject(gen, subj)
    stale = _stale_demo_adapter(decoder)
    if stale:
        yield Log(stale, level="warning")
    pred = predict_split(model, split, cfg.repeat_mode, encoder_dir=decoder.encoder_dir,
                         want_levels=decoder.router is not None and cfg.source == "brain", device=gen.device)
    if cfg.source == "oracle":
        pred = BrainPrediction(pred.image_index, pred.trials, pred.targets, pred.targets)
        yield Log("oracle: conditioning on the true image embeddings of the split, not on the brain")
    keep = _kept_rows(pred, trials, subj, split)
    blurry_u8 = _blurry_images(cfg, model, decoder, pred)
    if cfg.source == "oracle" and cfg.img2img_strength is not None and blurry_u8 is None:
        cfg = cfg.replace(img2img_strength=None)
        scfg = cfg.sampler_config()
        yield Log(f"oracle: {gen.kind} generator draws no low-level image from an embedding (the brain's would not "
                  "be the oracle's): its samples start from noise")
    yield Log(f"{len(keep)} images × {cfg.samples} samples, {scfg.sampler} {scfg.steps} steps, guidance "
              f"{scfg.guidance}, generator {gen.kind} ({gen.image_size}px)")
    yield from _write_samples(cfg, scfg, model, decoder, pred, keep, blurry_u8, out_dir, split, method, cancel)
    yield Finished(status="done", summary={"out_dir": str(out_dir), "n_images": len(keep),
                                           "n_samples": len(keep) * cfg.samples})
    return ReconResult(str(out_dir), len(keep), len(keep) * cfg.samples)


def _blurry_images(cfg: ReconstructConfig, model: TrainedModel, decoder, pred: BrainPrediction):
    """The low-level images (uint8, at the generator's size) the samples may start from, or None."""
    from engine.recon.blurry import resize, to_uint8

    gen = decoder.generator
    if cfg.source == "oracle":  # only what the generator draws from the true embedding itself: never the brain's
        blurry = embedding_images(gen, pred.embeddings)
        if blurry is None:
            blurry = decoder.layout(pred.embeddings, from_brain=False)
    else:
        blurry = pred.blurry
        if blurry is None and is_pixel_run(model.info):
            blurry = predicted_images(pred.embeddings, model.subject.image_shape)
        if blurry is None:  # a generator trained on the user's images decodes its embedding linearly
            blurry = embedding_images(gen, pred.embeddings)
        if blurry is None:  # a generator with a layout head draws its own coarse picture (the demo generator)
            blurry = decoder.layout(pred.embeddings)
        if blurry is None and decoder.blurry is not None:
            blurry = decoder.blurry.predict(pred.embeddings)
    if cfg.img2img_strength is not None and blurry is None and cfg.source == "brain":
        raise ConfigError("img2img_strength needs a blurry image: the run's encoder has no low-level head and the "
                          "decoder has neither a layout head nor a blurry ridge (run finetune)")
    return None if blurry is None else resize(to_uint8(blurry), gen.image_size)


def _write_samples(cfg: ReconstructConfig, scfg, model: TrainedModel, decoder, pred: BrainPrediction,
                   keep: np.ndarray, blurry_u8, out_dir: Path, split: str, method: str | None, cancel):
    """Job body: sample every kept image in batches and write the folder (PNGs, ``index.json``, embeddings)."""
    from engine.atomic import atomic_dir
    from engine.recon.index import ReconIndex, save_embeddings

    gen, subj, info = decoder.generator, model.subject, model.info
    per_batch = max(1, int(cfg.batch_size or sampling_batch(gen)) // cfg.samples)
    n_batches = -(-len(keep) // per_batch)
    progress = _StepCounter(n_batches * scfg.steps)
    items: list = []
    with atomic_dir(out_dir, overwrite=True) as tmp:
        for b in range(n_batches):
            sel = keep[b * per_batch:(b + 1) * per_batch]
            images = yield from _sample_batch(cfg, scfg, decoder, pred, sel, blurry_u8, progress, cancel)
            items += _write_batch(tmp, cfg, subj, pred, sel, images, blurry_u8)
        settings = {**cfg.to_dict(), "generator": gen.path, "image_size": gen.image_size}
        label = method or (f"oracle: true {info.get('embedder')} embeddings + {gen.kind} generator"
                           if cfg.source == "oracle"
                           else f"{model.run.config.name} ({info.get('kind')}) + {gen.kind} generator")
        ReconIndex(subject=str(subj.path) if subj.path else subj.name, run=str(model.run.path), split=split,
                   method=label, settings=settings, embedder=info.get("embedder"), items=items).save(tmp)
        save_embeddings(tmp, pred.image_index[keep], pred.embeddings[keep], pred.targets[keep])


class _StepCounter:
    """Denoising steps done over all batches, and the time left."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.clock = total, 0, EtaClock(total)

    def advance(self) -> Progress:
        self.done += 1
        return Progress(self.done, self.total, eta_s=self.clock.eta(self.done), stage="reconstruct")


def _sample_batch(cfg: ReconstructConfig, scfg, decoder, pred: BrainPrediction, sel: np.ndarray, blurry_u8,
                  progress: _StepCounter, cancel):
    """Denoise the ``cfg.samples`` samples of each image of rows ``sel``; returns the decoded images (uint8)."""
    import torch

    from engine.recon.sampler import denoise

    gen, k_samples = decoder.generator, cfg.samples
    img_idx = pred.image_index[sel]
    emb = torch.from_numpy(pred.embeddings[sel]).to(gen.device)
    null = decoder.adapter.null_condition(len(sel) * k_samples)
    with torch.no_grad():
        if decoder.router is not None and pred.levels is not None:  # never for the oracle (no levels)
            lv = torch.from_numpy(pred.levels[:, sel]).to(gen.device)

            def cond(t, lv=lv):
                with torch.no_grad():
                    return decoder.condition(decoder.router.mix(lv, t.reshape(1))).repeat(k_samples)
        else:
            cond = decoder.condition(emb, from_brain=cfg.source == "brain").repeat(k_samples)
    seeds = [sample_seed(cfg.seed, int(i), k) for i in img_idx for k in range(k_samples)]
    init = None
    if cfg.img2img_strength is not None:
        init = gen.encode(np.repeat(blurry_u8[sel], k_samples, axis=0))
    loop = denoise(gen, cond, null, scfg, seeds=seeds, init_latents=init, cancel=cancel)
    while True:
        try:
            state = next(loop)
        except StopIteration as stop:
            latents = stop.value
            break
        yield progress.advance()
        if cfg.preview_every and (state.step % cfg.preview_every == 0 or state.step == state.total):
            yield Preview(kind="denoise", step=state.step, image=gen.decode(state.x0[:1])[0], trial=int(img_idx[0]))
    return gen.decode(latents)


def _write_batch(tmp: Path, cfg: ReconstructConfig, subj, pred: BrainPrediction, sel: np.ndarray, images,
                 blurry_u8) -> list:
    """Write the samples, ground truths and blurry images of rows ``sel``; their ``ReconItem``s."""
    from engine.recon.index import ReconItem, blurry_name, gt_name, sample_name

    labels, cats = subj.stimuli.labels, subj.stimuli.categories
    items = []
    for j, i in enumerate(pred.image_index[sel]):
        i = int(i)
        names = []
        for k in range(cfg.samples):
            _png(tmp / sample_name(i, k), images[j * cfg.samples + k])
            names.append(sample_name(i, k))
        _png(tmp / gt_name(i), np.asarray(subj.images[i]))
        bname = None
        if blurry_u8 is not None:
            _png(tmp / blurry_name(i), blurry_u8[sel[j]])
            bname = blurry_name(i)
        lab = None if labels is None else int(labels[i])
        category = cats[lab] if lab is not None and 0 <= lab < len(cats) else None
        items.append(ReconItem(image_index=i, trials=pred.trials[sel[j]], category=category,
                               ground_truth=gt_name(i), blurry=bname, samples=names))
    return items
