"""``"pixels"``: a model-free image embedding (a fixed random projection of 8×8 thumbnails), the baseline target that
needs no trained embedder; tests and the tiny presets use it."""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError

PIXELS = "pixels"


class PixelEmbedder:
    """Model-free image embedding: 8×8 area-mean thumbnails in [0, 1] of the whole image.

    Pooled: the centred thumbnail (192 values) times a fixed Gaussian projection (seed 0) to ``dim`` = 64.
    Tokens: the 16 patches of 2×2 pixels × 3 channels, shape (16, 12).
    """

    spec = PIXELS
    dim = 64
    token_shape = (16, 12)
    identity = "pixels-v2"  # v2: area resize of the whole image (v1 cropped to a multiple of 8)

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._proj = (rng.standard_normal((192, self.dim)) / np.sqrt(192)).astype(np.float32)

    @staticmethod
    def thumbnails(images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 → (N, 8, 8, 3) float32 area means in [0, 1] over the whole image (never cropped)."""
        from engine.metrics.lowlevel import area_resize

        n, h, w, _ = images.shape
        if h < 8 or w < 8:
            raise ConfigError(f"pixels embedder: images must be at least 8×8, found {h}×{w}")
        return area_resize(np.asarray(images), 8).astype(np.float32)

    def embed(self, images: np.ndarray, *, tokens: bool = False, batch_size: int = 256) -> np.ndarray:
        out = []
        for s in range(0, images.shape[0], batch_size):
            t = self.thumbnails(np.asarray(images[s : s + batch_size]))
            if tokens:
                n = t.shape[0]
                out.append(t.reshape(n, 4, 2, 4, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, 16, 12))
            else:
                out.append((t.reshape(t.shape[0], -1) - 0.5) @ self._proj)
        return np.concatenate(out).astype(np.float32)
