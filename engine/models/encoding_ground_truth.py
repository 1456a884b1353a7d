"""Encoding maps checked against a simulated subject's generating parameters (true noise ceiling, pRF centres)."""

from __future__ import annotations

import numpy as np

from engine.models.encoding import EncodingMaps, session_zscore


def contrast_energy(images, *, grid: int = 16, block: int = 256) -> np.ndarray:
    """Local contrast/colour energy of each image on a ``grid × grid`` map, (n_images, grid, grid) float32.

    Energy = summed absolute RGB difference from the image's background colour (median of its border pixels),
    averaged over each grid cell. Row 0 is the top of the image, column 0 its left edge.
    """
    n, h, w, _ = images.shape
    out = np.empty((n, grid, grid), np.float32)
    for s in range(0, n, block):
        x = np.asarray(images[s : s + block], np.float32) / 255.0
        border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)  # (b, 2h+2w, 3)
        bg = np.median(border, axis=1)[:, None, None, :]
        e = np.abs(x - bg).sum(-1)  # (b, h, w)
        hs, ws = h // grid, w // grid
        e = e[:, : hs * grid, : ws * grid].reshape(len(x), grid, hs, grid, ws).mean((2, 4))
        out[s : s + block] = e
    return out


def estimate_prf_centres(responses: np.ndarray, energy: np.ndarray, *, top_fraction: float = 0.5) -> np.ndarray:
    """Receptive-field centre of each voxel from its responses to images' contrast energy.

    Correlates every voxel's responses with the energy in each grid cell and takes the centroid of the cells whose
    correlation exceeds ``top_fraction`` of that voxel's maximum.

    Parameters
    ----------
    responses : (n_images, n_voxels)
    energy : (n_images, grid, grid)

    Returns
    -------
    (n_voxels, 2) float32: (x, y) in grid-cell units scaled to [0, 1] (x to the right, y downwards, cell centres).
    """
    n, g, _ = energy.shape
    e = energy.reshape(n, g * g).astype(np.float64)
    e = (e - e.mean(0)) / np.where(e.std(0) > 0, e.std(0), 1.0)
    r = np.asarray(responses, np.float64)
    r = (r - r.mean(0)) / np.where(r.std(0) > 0, r.std(0), 1.0)
    corr = e.T @ r / n  # (g², n_voxels)
    top = corr.max(0, keepdims=True)
    wgt = np.where(corr >= top_fraction * top, np.clip(corr, 0, None), 0.0)
    wgt = wgt / np.where(wgt.sum(0) > 0, wgt.sum(0), 1.0)
    rows, cols = np.divmod(np.arange(g * g), g)
    x = ((cols + 0.5) / g) @ wgt
    y = ((rows + 0.5) / g) @ wgt
    return np.stack([x, y], 1).astype(np.float32)


def ground_truth_checks(subject, maps: EncodingMaps) -> dict:
    """Compare recovered maps with a simulated subject's generating parameters. Empty for real subjects.

    - ``r_vs_true_noise_ceiling``: Spearman correlation, over voxels, of test r with the true noise ceiling.
    - ``roi_order_spearman_r_vs_true_ceiling``: do ROIs rank the same by mean test r as by mean true ceiling?
    - ``prf_x_corr``/``prf_y_corr``: Pearson correlation between the true pRF centres of early visual voxels and the
      centres estimated from their training responses to contrast energy (``estimate_prf_centres``).
    """
    gt = subject.ground_truth or {}
    out: dict = {}
    nc_true = gt.get("noise_ceiling_true", gt.get("noise_ceiling"))
    if nc_true is not None:
        nc_true = np.asarray(nc_true, np.float64)
        out["r_vs_true_noise_ceiling"] = _spearman(maps.test_r, nc_true)
        roi_r, roi_nc = [], []
        for name, mask in subject.rois.items():
            m = np.asarray(mask, bool)
            if m.any():
                roi_r.append(float(maps.test_r[m].mean()))
                roi_nc.append(float(nc_true[m].mean()))
        if len(roi_r) >= 3:
            out["roi_order_spearman_r_vs_true_ceiling"] = _spearman(np.array(roi_r), np.array(roi_nc))
    if "prf_x" in gt and "prf_y" in gt:
        out.update(_prf_check(subject, np.asarray(gt["prf_x"], np.float64), np.asarray(gt["prf_y"], np.float64)))
    return out


EARLY_VISUAL = ("V1", "V2", "V3")


def _prf_check(subject, true_x: np.ndarray, true_y: np.ndarray) -> dict:
    early = np.zeros(subject.n_voxels, bool)
    for name in EARLY_VISUAL:
        if name in subject.rois:
            early |= np.asarray(subject.rois[name], bool)
    early &= np.isfinite(true_x) & np.isfinite(true_y)
    if early.sum() < 3:
        return {}
    train = subject.split_indices("train")
    image_index = np.asarray(subject.trials.image_index)[train]
    betas = session_zscore(subject.betas[:, np.flatnonzero(early)], subject.trials.session)[train]
    # One response per training image (averaging any repeats), against that image's energy map.
    uniq, inv = np.unique(image_index, return_inverse=True)
    resp = np.zeros((len(uniq), betas.shape[1]), np.float64)
    np.add.at(resp, inv, betas)
    resp /= np.bincount(inv)[:, None]
    energy = contrast_energy(subject.images[uniq] if len(uniq) < subject.n_images else subject.images)
    est = estimate_prf_centres(resp, energy)
    return {"prf_n_voxels": int(early.sum()),
            "prf_x_corr": float(np.corrcoef(est[:, 0], true_x[early])[0, 1]),
            "prf_y_corr": float(np.corrcoef(est[:, 1], true_y[early])[0, 1])}


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(len(x))
    return r


def _spearman(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    return float(np.corrcoef(_rank(a[ok]), _rank(b[ok]))[0, 1])
