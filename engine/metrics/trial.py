"""Metrics of one trial's reconstructions (the GUI's clicked trial): low-level scores and feature correlation
distance per sample, computed exactly as the folder evaluation (``engine.evaluate``) computes them per item."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from engine.metrics import identification, lowlevel


def per_trial_metrics(gt_image, recon_images, *, extractors: Sequence[Callable] = ()) -> dict[str, np.ndarray]:
    """Metrics of one trial (the GUI's clicked trial): low-level and feature correlation distance per sample.

    Parameters
    ----------
    gt_image : (H, W, 3) uint8 or float
    recon_images : (k, H, W, 3) or (H, W, 3)
        The trial's samples (any size; each is prepared at 256×256 like the full evaluation).
    extractors : FeatureExtractor instances, optional
        Adds ``corr-dist NAME`` per extractor (anything with a ``name`` that maps prepared images
        ``(n, 256, 256, 3)`` to features ``(n, ...)``). Two-way identification and retrieval need the whole test
        set: take them from ``engine.evaluate.evaluate_folder(...).per_trial``.

    Returns
    -------
    dict name -> (k,) float64
    """
    rec = np.asarray(recon_images)
    rec = rec[None] if rec.ndim == 3 else rec
    g = lowlevel.prepare_images(np.asarray(gt_image)[None])
    r = lowlevel.prepare_images(rec)
    gk = np.repeat(g, len(r), axis=0)
    out = lowlevel.pixcorr_ssim(gk, r)
    out["MSE"] = lowlevel.mse(gk, r)
    out["PSNR"] = lowlevel.psnr(gk, r)
    for ext in extractors:
        out[f"corr-dist {ext.name}"] = identification.correlation_distance(np.repeat(ext(g), len(r), axis=0), ext(r))
    return out
