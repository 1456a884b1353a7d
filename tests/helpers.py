"""Small builders shared by tests (not fixtures, so tests can call them with their own sizes)."""

from __future__ import annotations

import numpy as np

from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable


def make_tiny_subject(n_train: int = 200, n_test_images: int = 10, repeats: int = 3, n_voxels: int = 64,
                      size: int = 16, seed: int = 0) -> Subject:
    """Voxels respond linearly to image features, so models can learn something; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    n_images = n_train + n_test_images
    images = rng.integers(0, 256, size=(n_images, size, size, 3), dtype=np.uint8)
    feats = images.reshape(n_images, -1).astype(np.float32) / 255.0
    w = rng.standard_normal((feats.shape[1], n_voxels)).astype(np.float32) / np.sqrt(feats.shape[1])
    image_index = np.concatenate([np.arange(n_train), np.repeat(np.arange(n_train, n_images), repeats)])
    repeat = np.concatenate([np.zeros(n_train, int), np.tile(np.arange(repeats), n_test_images)])
    split = np.concatenate([np.zeros(n_train, np.int8), np.ones(n_test_images * repeats, np.int8)])
    n_trials = len(image_index)
    betas = feats[image_index] @ w + 0.5 * rng.standard_normal((n_trials, n_voxels)).astype(np.float32)
    session = 1 + (np.arange(n_trials) * 2 // n_trials)
    trials = TrialTable(image_index=image_index.astype(np.int64), session=session.astype(np.int64),
                        run=np.ones(n_trials, np.int64), repeat=repeat.astype(np.int64), split=split)
    voxels = VoxelTable(hemi=(np.arange(n_voxels) % 2).astype(np.int8), vertex=np.arange(n_voxels, dtype=np.int32),
                        ijk=np.full((n_voxels, 3), -1, np.int32), noise_ceiling=np.full(n_voxels, 0.5, np.float32))
    rois = {"V1": np.arange(n_voxels) < n_voxels // 2, "LO": np.arange(n_voxels) >= n_voxels // 2}
    labels = np.arange(n_images) % 4
    stimuli = Stimuli(categories=["a", "b", "c", "d"], labels=labels, captions=[f"image {i}" for i in range(n_images)])
    return Subject(betas=betas.astype(np.float32), trials=trials, images=images, voxels=voxels, rois=rois,
                   stimuli=stimuli, name="tiny", format="native", provenance={"sources": ["tests.helpers"]})
