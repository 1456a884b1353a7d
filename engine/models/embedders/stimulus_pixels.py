"""``"stimulus-pixels"``: the stimulus images themselves as the decoding target, at their own resolution.

The target of the ``pixel-ridge`` preset (a cross-validated ridge from voxels straight to pixels, one alpha per pixel,
the classic decoder of small-image datasets): every pixel in [0, 1], one value per pixel for grey stimuli (three equal
channels, see ``engine.data.readers.own_images.is_grey``) and three for colour ones. ``pixels_to_images`` turns a
prediction back into images. No model, no cache (the target is the images).
"""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError

STIMULUS_PIXELS = "stimulus-pixels"


class StimulusPixelEmbedder:
    """Flattened pixels in [0, 1]: ``(N, H·W)`` for grey image sets, ``(N, H·W·3)`` for colour ones."""

    spec = STIMULUS_PIXELS
    dim = None  # the stimulus's own size: known once images are seen
    token_shape = None
    identity = "stimulus-pixels-v1"

    def embed(self, images: np.ndarray, *, tokens: bool = False, batch_size: int = 256) -> np.ndarray:
        from engine.data.readers.own_images import is_grey

        if tokens:
            raise ConfigError(f"data.target: embedder '{STIMULUS_PIXELS}' has no token embeddings; use 'pooled'")
        images = np.asarray(images)
        x = images[..., :1] if is_grey(images) else images
        return (x.reshape(len(x), -1).astype(np.float32) / 255.0)


def pixels_to_images(flat: np.ndarray, image_shape) -> np.ndarray:
    """Predicted pixels ``(n, H·W·C)`` (C = 1 or 3) → ``(n, 3, H, W)`` float32 in [0, 1] (grey repeated to RGB)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    flat = np.asarray(flat, np.float32).reshape(len(flat), -1)
    c = flat.shape[1] // (h * w)
    if c not in (1, 3) or c * h * w != flat.shape[1]:
        raise ConfigError(f"pixel predictions of {flat.shape[1]} values do not fit {h}×{w} images (1 or 3 channels)")
    x = np.clip(flat.reshape(len(flat), h, w, c), 0.0, 1.0).transpose(0, 3, 1, 2)
    return np.repeat(x, 3, axis=1) if c == 1 else x
