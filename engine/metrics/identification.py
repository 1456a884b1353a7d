"""Two-way identification (exhaustive) and correlation distance on feature vectors.

Definitions (``metrics.md`` §3, brain-diffuser ``pairwise_corr_all``, MindEyeV2 ``two_way_identification``): with
ground-truth features ``g_j`` and reconstruction features ``r_i`` (flattened), ``C[j, i] = Pearson(g_j, r_i)`` and

    score_i = #{j ≠ i : C[j, i] < C[i, i]} / (N − 1),    2-way = mean_i score_i    (chance 0.5)

using all N − 1 distractors, no random pairs. Correlations within ``TIE_EPS`` of ``C[i, i]`` count as ties
(failures), so duplicated images give the same score whatever the rounding. Correlation distance (EffNet-B / SwAV
rows): ``d_i = 1 − Pearson(g_i, r_i)`` (``scipy.spatial.distance.correlation``), lower is better.

Shapes: features ``(n_images, n_features)`` (any trailing shape is flattened). Results are ``(n_images,)``.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 1024  # columns of C computed at once: bounds memory at 1024 × N float64
TIE_EPS = 1e-12  # correlations closer than this are a tie (a failure), not decided by floating-point rounding


def _zscore_rows(x) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / norm[:, None]


def pearson_matrix(a, b) -> np.ndarray:
    """``C[j, i] = Pearson(a[j], b[i])``: ``(n_a, n_b)`` from ``(n_a, d)`` and ``(n_b, d)``."""
    return _zscore_rows(a) @ _zscore_rows(b).T


def two_way_scores(gt_features, recon_features) -> np.ndarray:
    """Per-image two-way identification score: the fraction of the other N − 1 ground truths that correlate less with
    ``recon[i]`` than ``gt[i]`` does.

    Parameters
    ----------
    gt_features, recon_features : arrays (n_images, ...), row i of both belongs to test image i

    Returns
    -------
    (n_images,) float64 in [0, 1]
    """
    g = _zscore_rows(gt_features)
    r = _zscore_rows(recon_features)
    if g.shape != r.shape:
        raise ValueError(f"feature shapes differ: ground truth {g.shape}, reconstructions {r.shape}")
    n = g.shape[0]
    if n < 2:
        raise ValueError("two-way identification needs at least 2 images")
    out = np.empty(n)
    for s in range(0, n, _BLOCK):
        c = g @ r[s : s + _BLOCK].T  # (n, block): column i = every ground truth vs reconstruction s + i
        cols = np.arange(c.shape[1])
        congruent = c[s + cols, cols]
        # Strict "<" with a tie margin: exact ties (duplicated images) count as failures whatever the rounding of
        # the two correlations; the diagonal never counts.
        out[s : s + _BLOCK] = (c < congruent[None, :] - TIE_EPS).sum(axis=0) / (n - 1)
    return out


def two_way_of_samples(gt_features, sample_features, own) -> np.ndarray:
    """``two_way_scores`` for samples that each belong to one ground truth: several samples per image allowed.

    Parameters
    ----------
    gt_features : (n_images, ...) ground-truth features, n_images >= 2
    sample_features : (m, ...) features of m reconstructions
    own : (m,) int
        Row of ``gt_features`` each reconstruction belongs to.

    Returns
    -------
    (m,) float64: for each reconstruction, the fraction of the other n − 1 ground truths that correlate less with it
    than its own ground truth does (same tie rule as ``two_way_scores``).
    """
    g = _zscore_rows(gt_features)
    r = _zscore_rows(sample_features)
    own = np.asarray(own, np.int64)
    if g.shape[0] < 2:
        raise ValueError("two-way identification needs at least 2 images")
    c = r @ g.T  # (m, n)
    congruent = c[np.arange(len(own)), own]
    below = (c < congruent[:, None] - TIE_EPS)
    below[np.arange(len(own)), own] = False
    return below.sum(axis=1) / (g.shape[0] - 1)


def two_way_identification(gt_features, recon_features) -> float:
    """Mean two-way identification over all images (exhaustive; chance 0.5)."""
    return float(two_way_scores(gt_features, recon_features).mean())


def correlation_distance(gt_features, recon_features) -> np.ndarray:
    """``1 − Pearson(gt[i], recon[i])`` per image: ``(n_images,)``, lower is better."""
    g = _zscore_rows(gt_features)
    r = _zscore_rows(recon_features)
    if g.shape != r.shape:
        raise ValueError(f"feature shapes differ: ground truth {g.shape}, reconstructions {r.shape}")
    return 1.0 - np.einsum("ij,ij->i", g, r)
