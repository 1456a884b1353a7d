"""A small MATLAB-style dataset as courses ship them: grey images flattened column-major into rows, betas, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def grey_images(n: int, size: int = 12, seed: int = 0) -> np.ndarray:
    """(n, size, size) uint8 grey images with an asymmetric pattern (so a transposed read is visible)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(2, size - 2, 2)
        out[i] = np.clip(255 * np.exp(-((yy - cy) ** 2 + 0.3 * (xx - cx) ** 2) / 6.0) + 30 * (xx > yy), 0, 255)
    return out


def matlab_rows(images: np.ndarray) -> np.ndarray:
    """MATLAB's ``reshape(img, 1, [])`` of each image: (n, H·W) column-major rows, as doubles in [0, 1]."""
    return np.stack([im.reshape(-1, order="F") for im in images]).astype(np.float64) / 255.0


def write_flat_matlab(folder: Path, *, n_train: int = 20, n_test: int = 6, size: int = 12, n_voxels: int = 30,
                      v73: bool = False, prior: int = 0, seed: int = 0) -> dict:
    """Write ``data.mat`` (v5, or v7.3 = HDF5 with MATLAB's reversed axes) and ``mapping.yaml``; return the truth."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    imgs = grey_images(n_train + n_test + prior, size, seed)
    train, test, extra = imgs[:n_train], imgs[n_train:n_train + n_test], imgs[n_train + n_test:]
    arrays = {"X_train": rng.standard_normal((n_train, n_voxels)), "X_test": rng.standard_normal((n_test, n_voxels)),
              "stim_train": matlab_rows(train), "stim_test": matlab_rows(test),
              "labels": rng.integers(0, 3, n_train + n_test).astype(np.float64)}
    if prior:
        arrays["unlabeled"] = matlab_rows(extra)
    path = folder / "data.mat"
    if v73:
        import h5py

        with h5py.File(path, "w") as f:  # MATLAB writes column-major: h5py sees every axis reversed
            for k, v in arrays.items():
                f[k] = np.ascontiguousarray(np.asarray(v).T)
    else:
        import scipy.io

        scipy.io.savemat(path, arrays)
    lines = ["version: 1", "file: data.mat", "name: flat", "betas: {train: X_train, test: X_test}",
             f"images: {{train: stim_train, test: stim_test, shape: [{size}, {size}], order: F}}"]
    if prior:
        lines.append(f"prior_images: {{all: unlabeled, shape: [{size}, {size}], order: F}}")
    (folder / "mapping.yaml").write_text("\n".join(lines) + "\n")
    return {"mapping": folder / "mapping.yaml", "path": path, "train": train, "test": test, "prior": extra}
