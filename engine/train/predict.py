"""Predicted embeddings from a trained run: what the reconstruction stage and the GUI consume.

>>> pred = predict_embeddings("runs/demo-mlp", "demo-sub01.nlsubj", split="test")
>>> pred.embeddings.shape, pred.targets.shape        # (n_test_images, *target_shape) twice
>>> pred.per_repeat.shape                            # (n_test_images, max_repeats, *target_shape), NaN-padded

The run's ``model/`` folder holds ``run_model.json`` (kind, subject, target shape, embedder), the voxel selection and
z-scoring statistics (``normalization.safetensors``) and either ``encoder/`` (a torch ``BrainEncoder`` folder) or
``ridge/`` (a ``RidgeCV`` folder). Betas are normalised with the *training* statistics before the model sees them.

Runs trained with ``data.caption_embedder`` also predict caption embeddings: ``predict_captions(run, subject)`` (the
encoder's caption head, or ``model/caption_ridge/`` for ridge runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import CheckpointError, ConfigError, DataError
from engine.train.dataset import Normalizer, average_groups, split_groups
from engine.train.run import Run
NORMALIZATION = "normalization.safetensors"
ENCODER_DIR = "encoder"  # in model/: a torch BrainEncoder folder (engine.models.base)
RIDGE_DIR = "ridge"  # in model/: a RidgeCV folder
REPEAT_MODES = ("average_outputs", "average_voxels")


@dataclass(frozen=True)
class Prediction:
    """Predictions of a run for one split of a subject, one row per image (ascending image index).

    Attributes
    ----------
    image_index : int64 array (n,)
        Rows into ``subject.images``.
    embeddings : float32 array (n, *target_shape)
        Predicted target embeddings, combined over repeats as ``repeat_mode`` says.
    targets : float32 array (n, *target_shape)
        The true embeddings of the seen images (same embedder as training).
    per_repeat : float32 array (n, R, *target_shape) or None
        Single-trial predictions (``average_outputs`` only); NaN where an image has fewer than R repeats.
    blurry : float32 array (n, C, H, W) or None
        The low-level head's output (MLP with ``blurry: true``), combined the same way.
    repeat_mode : str
    """

    image_index: np.ndarray
    embeddings: np.ndarray
    targets: np.ndarray
    per_repeat: np.ndarray | None
    blurry: np.ndarray | None
    repeat_mode: str = "average_outputs"


@dataclass(frozen=True)
class GroupPrediction:
    embeddings: np.ndarray
    per_repeat: np.ndarray | None
    blurry: np.ndarray | None


def model_info(run_dir: str | Path | Run) -> dict:
    """``model/run_model.json`` of a finished run (``Run.model_info``), for a run folder given as a path."""
    return (run_dir if isinstance(run_dir, Run) else Run.open(run_dir)).model_info()


def load_encoder(run_dir: str | Path | Run, *, device: str = "cpu"):
    """The trained model of a run: a torch ``BrainEncoder`` in eval mode, a fitted ``RidgeCV``, or a
    ``PixelBasisDecoder`` (a ridge onto a pixel basis that predicts pixels, ``engine.models.pixel_basis``)."""
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir)
    info = model_info(run)
    if info["kind"] == "ridge":
        from engine.models.ridge import RidgeCV

        if info.get("pixel_basis"):  # pixel-ridge through a basis (PCA, multi-scale): decodes back to pixels
            from engine.models.pixel_basis import PixelBasisDecoder

            return PixelBasisDecoder.load_from(run.model_dir)
        return RidgeCV.load(run.model_dir / RIDGE_DIR)
    from engine.models.registry import load_encoder_folder

    return load_encoder_folder(run.model_dir / ENCODER_DIR, device=device).eval()


def _run_subject_split(run: Run, subject, split: str):
    """The subject (opened when given as a path), the run's normaliser checked against it, and ``split_groups``."""
    from engine.data.subject import Subject

    if not isinstance(subject, Subject):
        from engine.data import open_subject

        subject = open_subject(subject)
    norm = load_normalizer(run)
    if norm.voxel_index.size and int(norm.voxel_index.max()) >= subject.n_voxels:
        raise DataError(subject.path or subject.name, "subject does not match the run's voxels", key="betas",
                        expected=f"at least {int(norm.voxel_index.max()) + 1} voxels", found=subject.n_voxels)
    groups = split_groups(subject, split)
    if len(groups[2]) == 0:
        raise DataError(subject.path or subject.name, f"no trials in split '{split}'", key="trials.split")
    return subject, norm, groups


def load_normalizer(run_dir: str | Path | Run) -> Normalizer:
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir)
    p = run.model_dir / NORMALIZATION
    if not p.is_file():
        raise CheckpointError(f"{run.path}: incomplete model folder: missing model/{NORMALIZATION}")
    try:
        return Normalizer.load(p)
    except (KeyError, ValueError, TypeError, OSError) as e:  # truncated or tampered safetensors
        raise CheckpointError(f"{p}: cannot read the normalisation ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError on damaged headers
        raise CheckpointError(f"{p}: cannot read the normalisation ({type(e).__name__})") from None


def forward_all(model, betas: np.ndarray, subject_key: str, target_shape, *, device="cpu",
                batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """Model outputs for every row of ``betas`` (n, n_voxels): (embeddings (n, *shape), blurry (n, C, H, W) or None)."""
    shape = tuple(target_shape)
    if hasattr(model, "coef_"):  # RidgeCV
        return model.predict(betas).reshape(len(betas), *shape).astype(np.float32), None
    import torch

    was_training = model.training
    model.eval()
    embs, blurs = [], []
    try:
        with torch.no_grad():
            for s in range(0, len(betas), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(betas[s : s + batch_size], np.float32)).to(device)
                out = model(x, subject=subject_key)
                embs.append(out.embedding.float().cpu().numpy())
                if "blurry" in out.extras:
                    blurs.append(out.extras["blurry"].float().cpu().numpy())
    finally:
        model.train(was_training)
    emb = np.concatenate(embs) if embs else np.zeros((0, *shape), np.float32)
    return emb, (np.concatenate(blurs) if blurs else None)


def predict_groups(model, betas: np.ndarray, groups: np.ndarray, subject_key: str, target_shape, *,
                   repeat_mode: str = "average_outputs", device="cpu", per_repeat: bool = False) -> GroupPrediction:
    """Predictions per image from normalised betas (n_trials, n_voxels) and repeat groups (n_images, R), -1-padded."""
    if repeat_mode not in REPEAT_MODES:
        raise ConfigError(f"repeat_mode: expected one of {list(REPEAT_MODES)}, found {repeat_mode!r}")
    if repeat_mode == "average_voxels":
        emb, blur = forward_all(model, average_groups(betas, groups), subject_key, target_shape, device=device)
        return GroupPrediction(emb, None, blur)
    single, blur = forward_all(model, betas, subject_key, target_shape, device=device)
    emb = average_groups(single, groups)
    rep = None
    if per_repeat:
        valid = groups >= 0
        rep = single[np.where(valid, groups, 0)].astype(np.float32)
        rep[~valid] = np.nan
    return GroupPrediction(emb.astype(np.float32), rep, None if blur is None else average_groups(blur, groups))


def predict_embeddings(run, subject, split: str = "test", repeat_mode: str = "average_outputs", *,
                       device: str = "cpu") -> Prediction:
    """Predicted and true embeddings of every image of ``split``.

    Parameters
    ----------
    run : str, Path or Run
        A finished run folder.
    subject : str, Path or Subject
        The subject the run was trained on (or one with the same voxels).
    split : {"test", "train"}
    repeat_mode : {"average_outputs", "average_voxels"}
        Average the single-trial predictions over an image's repeats, or average the betas first.
    device : str
        Torch device for the forward passes.
    """
    from engine.train.targets import target_embeddings

    run = run if isinstance(run, Run) else Run.open(run)
    info = model_info(run)
    subject, norm, (image_index, groups, rows) = _run_subject_split(run, subject, split)
    model = load_encoder(run, device=device)
    betas = norm.apply(subject.betas, rows)
    shape = tuple(info["target_shape"])
    gp = predict_groups(model, betas, groups, info["subject"], shape, repeat_mode=repeat_mode, device=device,
                        per_repeat=True)
    targets = target_embeddings(subject.images, info["embedder"], info["target"])[image_index]
    return Prediction(image_index=image_index, embeddings=gp.embeddings, targets=targets.astype(np.float32),
                      per_repeat=gp.per_repeat, blurry=gp.blurry, repeat_mode=repeat_mode)


# ----------------------------------------------------------------------------------------------------------------------
# Caption predictions (second target, runs trained with ``data.caption_embedder``)

CAPTION_RIDGE = "caption_ridge"


@dataclass(frozen=True)
class CaptionPrediction:
    """Predicted caption embeddings of a run for one split, one row per image (ascending image index).

    Attributes
    ----------
    image_index : int64 array (n,)
    embeddings : float32 array (n, D_caption)
        The caption head's predictions (a second ridge fit for ridge runs), combined over repeats.
    targets : float32 array (n, D_caption)
        Caption embeddings of the seen images' captions (the run's caption embedder).
    per_repeat : float32 array (n, R, D_caption) or None
        Single-trial predictions (``average_outputs`` only), NaN-padded.
    repeat_mode : str
    """

    image_index: np.ndarray
    embeddings: np.ndarray
    targets: np.ndarray
    per_repeat: np.ndarray | None
    repeat_mode: str = "average_outputs"


def forward_captions(model, betas: np.ndarray, subject_key: str, *, device="cpu", batch_size: int = 256) -> np.ndarray:
    """Caption predictions (n, D_caption) for every row of normalised ``betas``.

    ``model`` is a torch ``BrainEncoder`` with a caption head or the caption ``RidgeCV`` of a ridge run.
    """
    if hasattr(model, "coef_"):  # RidgeCV fitted on the caption embeddings
        return model.predict(betas).reshape(len(betas), -1).astype(np.float32)
    if getattr(model, "caption_head", None) is None:
        raise ConfigError(f"{type(model).__name__}: this encoder has no caption head; train it with "
                          f"data.caption_embedder set")
    import torch

    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for s in range(0, len(betas), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(betas[s : s + batch_size], np.float32)).to(device)
                outs.append(model(x, subject=subject_key).caption.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0, int(model.caption_dim)), np.float32)


def predict_caption_groups(model, betas: np.ndarray, groups: np.ndarray, subject_key: str, *,
                           repeat_mode: str = "average_outputs", device="cpu",
                           per_repeat: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Caption predictions per image (n_images, D) from normalised betas and -1-padded repeat groups, and optionally
    the single-trial ones (n_images, R, D), NaN-padded."""
    if repeat_mode not in REPEAT_MODES:
        raise ConfigError(f"repeat_mode: expected one of {list(REPEAT_MODES)}, found {repeat_mode!r}")
    if repeat_mode == "average_voxels":
        return forward_captions(model, average_groups(betas, groups), subject_key, device=device), None
    single = forward_captions(model, betas, subject_key, device=device)
    rep = None
    if per_repeat:
        valid = groups >= 0
        rep = single[np.where(valid, groups, 0)].astype(np.float32)
        rep[~valid] = np.nan
    return average_groups(single, groups).astype(np.float32), rep


def load_caption_model(run_dir: str | Path | Run, *, device: str = "cpu"):
    """The caption predictor of a run: its torch encoder (with caption head) or its caption ``RidgeCV``."""
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir)
    info = model_info(run)
    if not info.get("caption_embedder"):
        raise ConfigError(f"{run.path}: this run has no caption head (trained without data.caption_embedder)")
    if info["kind"] == "ridge":
        from engine.models.ridge import RidgeCV

        return RidgeCV.load(run.model_dir / CAPTION_RIDGE)
    return load_encoder(run, device=device)


def predict_captions(run, subject, split: str = "test", repeat_mode: str = "average_outputs", *,
                     device: str = "cpu") -> CaptionPrediction:
    """Predicted and true caption embeddings of every image of ``split`` (see ``predict_embeddings``)."""
    from engine.train.targets import caption_targets

    run = run if isinstance(run, Run) else Run.open(run)
    info = model_info(run)
    model = load_caption_model(run, device=device)
    subject, norm, (image_index, groups, rows) = _run_subject_split(run, subject, split)
    emb, rep = predict_caption_groups(model, norm.apply(subject.betas, rows), groups, info["subject"],
                                      repeat_mode=repeat_mode, device=device, per_repeat=True)
    targets = caption_targets(subject, info["caption_embedder"])[image_index]
    return CaptionPrediction(image_index=image_index, embeddings=emb, targets=targets.astype(np.float32),
                             per_repeat=rep, repeat_mode=repeat_mode)
