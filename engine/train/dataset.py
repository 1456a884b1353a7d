"""The arrays a training run works on: z-scored single-trial betas, their targets, and the repeat-grouped test set.

Betas are z-scored per voxel with the mean and standard deviation of the *training* trials only (no test statistics
leak into training); the same ``Normalizer`` is saved with the model and applied at prediction time. The model trains
on single trials; the test set keeps its repeats so outputs can be averaged over them (or betas averaged first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, DataError
from engine.train.config import DataConfig

_BLOCK = 2048


@dataclass(frozen=True)
class Normalizer:
    """Voxel selection and z-scoring learned from the training trials.

    Attributes
    ----------
    voxel_index : int64 array (n_used_voxels,)
        Columns of the subject's betas the model uses (ROI selection), ascending.
    mean, std : float32 arrays (n_used_voxels,)
        Training-trial statistics; ``std`` is 1 where a voxel is constant (and with ``zscore: none``).
    """

    voxel_index: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.voxel_index.shape[0])

    def apply(self, betas, rows: np.ndarray | None = None) -> np.ndarray:
        """Selected, z-scored float32 betas ``(n_rows, n_used_voxels)`` from ``betas`` (n_trials, n_voxels)."""
        rows = np.arange(betas.shape[0]) if rows is None else np.asarray(rows)
        out = np.empty((len(rows), self.n_voxels), np.float32)
        full = self.voxel_index.shape[0] == betas.shape[1]
        for s in range(0, len(rows), _BLOCK):
            r = rows[s : s + _BLOCK]
            # Sorted fancy indexing keeps memory-map reads sequential.
            order = np.argsort(r, kind="stable")
            block = np.asarray(betas[r[order]], np.float32)
            if not full:
                block = block[:, self.voxel_index]
            tmp = np.empty_like(block)
            tmp[order] = block
            out[s : s + len(r)] = (tmp - self.mean) / self.std
        return out

    def to_tensors(self) -> dict:
        return {"voxel_index": self.voxel_index.astype(np.int64), "mean": self.mean.astype(np.float32),
                "std": self.std.astype(np.float32)}

    @classmethod
    def from_tensors(cls, d: dict) -> "Normalizer":
        return cls(voxel_index=np.asarray(d["voxel_index"], np.int64), mean=np.asarray(d["mean"], np.float32),
                   std=np.asarray(d["std"], np.float32))

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save

        from engine.atomic import atomic_write_bytes

        atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in self.to_tensors().items()}))

    @classmethod
    def load(cls, path: str | Path) -> "Normalizer":
        from safetensors.numpy import load_file

        return cls.from_tensors(load_file(str(path)))


def voxel_selection(subject, rois) -> np.ndarray:
    """Column indices of the union of ``rois`` (all voxels when empty)."""
    if not rois:
        return np.arange(subject.n_voxels, dtype=np.int64)
    missing = [r for r in rois if r not in subject.rois]
    if missing:
        raise ConfigError(f"data.rois: ROI(s) {missing} not in subject '{subject.name}' (has {subject.roi_names()})")
    idx = np.flatnonzero(subject.roi_mask(list(rois))).astype(np.int64)
    if idx.size == 0:
        raise ConfigError(f"data.rois: the ROIs {list(rois)} select no voxels")
    return idx


def fit_normalizer(subject, train_rows: np.ndarray, config: DataConfig) -> Normalizer:
    """Mean and std per selected voxel over the training trials (float64 accumulation, in row blocks)."""
    idx = voxel_selection(subject, config.rois)
    if config.zscore == "none":
        return Normalizer(idx, np.zeros(len(idx), np.float32), np.ones(len(idx), np.float32))
    s1 = np.zeros(len(idx))
    s2 = np.zeros(len(idx))
    rows = np.sort(np.asarray(train_rows))
    for s in range(0, len(rows), _BLOCK):
        b = np.asarray(subject.betas[rows[s : s + _BLOCK]], np.float64)[:, idx]
        s1 += b.sum(0)
        s2 += (b * b).sum(0)
    n = max(1, len(rows))
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 1e-8, std, 1.0)
    if not np.all(np.isfinite(mean)):
        raise DataError(subject.path or subject.name, "betas contain NaN or infinite values in the training trials",
                        key="betas")
    return Normalizer(idx, mean.astype(np.float32), std.astype(np.float32))


@dataclass
class PreparedData:
    """Arrays of one run (all float32, z-scored with the training statistics).

    Attributes
    ----------
    normalizer : Normalizer
    train_rows : (n_train,) int64
        Subject trial indices of the training trials, ascending.
    train_betas : (n_train, n_used_voxels)
    train_image : (n_train,) int64
        Image shown on each training trial (row into ``targets``).
    test_image_index : (n_test_images,) int64
        Test images, ascending.
    test_groups : (n_test_images, max_repeats) int64
        Rows of ``test_betas`` for each image's repeats, -1 where an image has fewer.
    test_rows : (n_test_trials,) int64
        Subject trial indices of ``test_betas`` rows.
    test_betas : (n_test_trials, n_used_voxels)
    targets : (n_images, *target_shape)
        Target embedding of every stimulus image.
    caption_targets : (n_images, D_caption) or None
        Caption embedding of every stimulus image (``DataConfig.caption_embedder``), else ``None``.
    """

    normalizer: Normalizer
    train_rows: np.ndarray
    train_betas: np.ndarray
    train_image: np.ndarray
    test_image_index: np.ndarray
    test_groups: np.ndarray
    test_rows: np.ndarray
    test_betas: np.ndarray
    targets: np.ndarray
    caption_targets: np.ndarray | None = None

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.targets.shape[1:])

    @property
    def n_voxels(self) -> int:
        return self.normalizer.n_voxels


def split_groups(subject, split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image_index, groups into the returned rows, rows): the split's trials grouped by image, repeats in order."""
    image_index, trials = subject.repeat_groups(split)
    rows = trials[trials >= 0]
    rows = np.sort(rows)
    pos = {int(r): i for i, r in enumerate(rows)}
    groups = np.full(trials.shape, -1, np.int64)
    for g in range(trials.shape[0]):
        for k in range(trials.shape[1]):
            if trials[g, k] >= 0:
                groups[g, k] = pos[int(trials[g, k])]
    return image_index.astype(np.int64), groups, rows.astype(np.int64)


def prepare_data(subject, config: DataConfig, *, targets: np.ndarray | None = None) -> PreparedData:
    """Z-scored training and test arrays and the targets of ``subject`` under ``config``.

    ``targets`` (n_images, *shape) may be passed to skip the embedder (e.g. when already computed).
    """
    train_rows = subject.split_indices("train").astype(np.int64)
    if len(train_rows) < 2:
        raise DataError(subject.path or subject.name, "too few training trials", key="trials.split",
                        expected=">= 2 trials with split 0", found=len(train_rows))
    has_test = np.any(np.asarray(subject.trials.split) == 1)
    norm = fit_normalizer(subject, train_rows, config)
    if targets is None:
        from engine.train.targets import target_embeddings

        targets = target_embeddings(subject.images, config.embedder, config.target)
    targets = np.asarray(targets, np.float32)
    if targets.shape[0] != subject.n_images:
        raise DataError(subject.path or subject.name, "targets do not match the stimulus images",
                        expected=f"{subject.n_images} rows", found=f"{targets.shape[0]}")
    captions = None
    if config.caption_embedder:
        from engine.train.targets import caption_targets

        captions = caption_targets(subject, config.caption_embedder)
    if has_test:
        img, groups, rows = split_groups(subject, "test")
    else:
        img, groups, rows = np.zeros(0, np.int64), np.zeros((0, 0), np.int64), np.zeros(0, np.int64)
    return PreparedData(
        normalizer=norm,
        train_rows=train_rows,
        train_betas=norm.apply(subject.betas, train_rows),
        train_image=np.asarray(subject.trials.image_index, np.int64)[train_rows],
        test_image_index=img,
        test_groups=groups,
        test_rows=rows,
        test_betas=norm.apply(subject.betas, rows) if len(rows) else np.zeros((0, norm.n_voxels), np.float32),
        targets=targets,
        caption_targets=captions,
    )


def average_groups(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean over each group's rows of ``values`` (n_rows, ...) → (n_groups, ...); ``groups`` padded with -1."""
    valid = groups >= 0
    safe = np.where(valid, groups, 0)
    stacked = values[safe]  # (n_groups, R, ...)
    w = valid.reshape(valid.shape + (1,) * (values.ndim - 1)).astype(np.float32)
    return (stacked * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)
