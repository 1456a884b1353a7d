"""Scoring image sets: one sample of every item against the ground truth, every per-item metric."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.evaluate.config import BLEND_WEIGHT
from engine.evaluate.context import LABEL_N_WAY, Context, distance_name, two_way_name
from engine.evaluate.result import EvaluationResult
from engine.metrics import brain, identification, lowlevel, semantic
from engine.metrics.pixel_identification import NativeProtocol
from engine.recon.index import ReconIndex


def load_png(folder: Path, rel: str) -> np.ndarray:
    """An RGB image of the folder as uint8 ``(H, W, 3)``."""
    from engine.data.readers.checks import read_image_rgb

    return read_image_rgb(folder / rel)  # pixel count checked before decoding (decompression bombs)


def load_set(folder: Path, rels: Sequence[str]) -> np.ndarray:
    """Images of one set, prepared at 256×256 float32 (the protocol's first step)."""
    out = np.empty((len(rels), lowlevel.EVAL_SIZE, lowlevel.EVAL_SIZE, 3), np.float32)
    for i, r in enumerate(rels):
        out[i] = lowlevel.prepare_images(load_png(folder, r)[None])[0]
    return out


def score_set(gt: np.ndarray, recon: np.ndarray, ctx: Context) -> dict[str, np.ndarray]:
    """Every per-item metric of one image set (one sample of each item): name -> (n_items,)."""
    out = lowlevel.pixcorr_ssim(gt, recon)
    out["MSE"] = lowlevel.mse(gt, recon)
    out["PSNR"] = lowlevel.psnr(gt, recon)
    feats = {}
    for ext in ctx.extractors:
        f = ext(recon)
        feats[ext.name] = f
        out[two_way_name(ext)] = identification.two_way_scores(ctx.gt_features[ext.name], f)
        out[distance_name(ext)] = identification.correlation_distance(ctx.gt_features[ext.name], f)
        if ctx.label_target is not None:
            scores = semantic.centroid_scores(f, ctx.gt_features[ext.name], ctx.label_target, len(ctx.label_classes))
            cfg = replace(ctx.config.n_way, n=ctx.label_n)
            out[f"{LABEL_N_WAY} {ext.name}"] = semantic.n_way_top1(scores, ctx.label_target, cfg)
    if ctx.classifier is not None:
        p = semantic.softmax(ctx.classifier.logits(recon))
        out[f"{ctx.config.n_way.n}-way top-1"] = semantic.n_way_top1(p, ctx.classifier_target, ctx.config.n_way)
    if ctx.encoder is not None:
        pred = ctx.encoder(recon)
        for roi, r in brain.roi_correlation(pred, ctx.measured, ctx.rois).items():
            out[f"brain r {roi}"] = r
    return out


def score_sets(index: ReconIndex, gt: np.ndarray, ctx: Context, native: NativeProtocol | None,
               res: EvaluationResult, cancel=None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Step 4 of ``evaluate_folder``: image set kind ("samples", "blend", "blurry", "ground truth") → one score dict
    per sample set (small stimuli: PixCorr/SSIM at their own size, plus pixel identification)."""
    cfg = ctx.config
    sets: dict[str, list[dict[str, np.ndarray]]] = {"samples": []}
    blurry = None
    if index.items[0].blurry is not None:
        blurry = load_set(index.path, [it.blurry for it in index.items])
    for s in range(index.k):
        if cancel is not None:
            cancel.raise_if_set()
        files = [it.samples[s] for it in index.items]
        recon = load_set(index.path, files)
        own_size = native.score(index.path, files, load_png) if native else {}
        sets["samples"].append(score_set(gt, recon, ctx) | own_size)
        if cfg.blend and blurry is not None:
            mix = BLEND_WEIGHT * recon + (1 - BLEND_WEIGHT) * blurry
            sets.setdefault("blend", []).append(score_set(gt, mix, ctx) | (native.score_array(mix) if native else {}))
    if blurry is not None:
        files = [it.blurry for it in index.items]
        sets["blurry"] = [score_set(gt, blurry, ctx) | (native.score(index.path, files, load_png) if native else {})]
    elif cfg.blend:
        res.unavailable["blend"] = "this reconstruction folder has no blurry images to blend with"
    if ctx.encoder is not None:
        sets["ground truth"] = [{f"brain r {roi}": r for roi, r in
                                 brain.roi_correlation(ctx.encoder(gt), ctx.measured, ctx.rois).items()}]
    return sets
