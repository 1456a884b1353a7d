"""Per-ROI brain correlation (MindEyeV2 ``metrics.md`` §6).

An encoding model predicts the voxel pattern evoked by an image; for each test item the prediction from the
reconstruction (and, as a ceiling, from the ground-truth image) is correlated with the *measured* pattern averaged over
the item's repeats, over the voxels of each ROI: ``r_i = Pearson(pred_i[roi], measured_i[roi])``. Tables report the
mean over items per ROI.
"""

from __future__ import annotations

import numpy as np


def repeat_averaged_voxels(betas, trials_per_item) -> np.ndarray:
    """Mean voxel pattern over each item's trials: ``(n_items, n_voxels)``.

    Parameters
    ----------
    betas : array (n_trials, n_voxels)
    trials_per_item : list of int sequences (trial indices of each item; -1 entries are ignored)
    """
    out = np.empty((len(trials_per_item), betas.shape[1]), np.float64)
    for i, tr in enumerate(trials_per_item):
        tr = np.asarray([t for t in tr if t >= 0], np.int64)
        if len(tr) == 0:
            raise ValueError(f"item {i} has no trials to average")
        out[i] = np.asarray(betas[np.sort(tr)], np.float64).mean(axis=0)
    return out


def roi_correlation(predicted, measured, rois: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-item Pearson r between predicted and measured patterns inside each ROI.

    Parameters
    ----------
    predicted, measured : arrays (n_items, n_voxels)
    rois : dict name -> bool mask (n_voxels,); an empty ROI is skipped. The key ``"all"`` (every voxel) is added.

    Returns
    -------
    dict name -> (n_items,) float64
    """
    p = np.asarray(predicted, np.float64)
    m = np.asarray(measured, np.float64)
    if p.shape != m.shape:
        raise ValueError(f"predicted {p.shape} and measured {m.shape} voxel arrays differ in shape")
    masks = {"all": np.ones(p.shape[1], bool)}
    masks.update({k: np.asarray(v, bool) for k, v in rois.items() if np.any(v)})
    out = {}
    for name, mask in masks.items():
        a = p[:, mask] - p[:, mask].mean(axis=1, keepdims=True)
        b = m[:, mask] - m[:, mask].mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return out
