"""The low-level path: a coarse ("blurry") image predicted from the brain, and its use as an img2img start.

Its sources, in this order of preference (``engine.recon.reconstruct``):

1. the encoder's own low-level head (MindEyeV2's blurry branch; ``Prediction.blurry``, ``(n, 3, H, W)`` in [0, 1]);
2. a pixel decoder's predicted images, or a generator trained on the user's images decoding its embedding linearly;
3. the generator's layout: the adapter's latent-shaped spatial map of the (prior-mapped) prediction, decoded by the VAE
   (``Decoder.layout``; the demo generator: on the demo it scores PixCorr 0.60 against the ridge's 0.45);
4. ``BlurryRidge``: a ridge regression from the predicted embedding to 16×16 thumbnails of the training images, fitted
   by ``finetune`` on the run's training predictions, so every run has a low-level image.

The blurry image is written beside the samples (and scored on its own by the metrics). With ``img2img_strength`` it
becomes the starting point of sampling: encoded by the VAE, noised to the ``strength`` share of the schedule, then
denoised under the brain condition (MindEyeV2 refinement / brain-diffuser style).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from engine.errors import CheckpointError

THUMB = 16


def to_uint8(blurry: np.ndarray) -> np.ndarray:
    """``(n, 3, H, W)`` floats in [0, 1] → uint8 ``(n, H, W, 3)``."""
    x = np.clip(np.nan_to_num(np.asarray(blurry, np.float32)), 0.0, 1.0)
    return (x.transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)


def resize(images_u8: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(n, h, w, 3)`` → ``(n, size, size, 3)`` (bicubic up, area-like down via PIL)."""
    from PIL import Image

    if images_u8.shape[1] == size and images_u8.shape[2] == size:
        return images_u8
    out = [np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images_u8]
    return np.stack(out).astype(np.uint8)


def thumbnails(images_u8: np.ndarray, size: int = THUMB) -> np.ndarray:
    """Area-resized thumbnails ``(n, 3, size, size)`` in [0, 1] of uint8 ``(n, H, W, 3)`` images of any size (the
    whole image, never a crop: images smaller than ``size`` are enlarged)."""
    from engine.metrics.lowlevel import area_resize

    x = area_resize(np.asarray(images_u8), size).astype(np.float32)
    return x.transpose(0, 3, 1, 2)


class BlurryRidge:
    """Ridge from a (flattened) predicted embedding to a ``(3, 16, 16)`` thumbnail; ``fit`` → ``predict``.

    Parameters
    ----------
    alpha : float
        Ridge penalty, relative to the mean eigenvalue of the standardised inputs' Gram matrix.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)

    def fit(self, embeddings: np.ndarray, images_u8: np.ndarray) -> "BlurryRidge":
        """embeddings (n, *shape) predicted for the training trials; images_u8 (n, H, W, 3) their seen images."""
        x = np.asarray(embeddings, np.float64).reshape(len(embeddings), -1)
        y = thumbnails(images_u8).reshape(len(images_u8), -1).astype(np.float64)
        self.x_mean_, self.x_std_ = x.mean(0), x.std(0) + 1e-6
        self.y_mean_ = y.mean(0)
        xs = (x - self.x_mean_) / self.x_std_
        gram = xs.T @ xs
        lam = self.alpha * np.trace(gram) / gram.shape[0]
        self.coef_ = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xs.T @ (y - self.y_mean_))
        return self

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, 3, 16, 16)`` in [0, 1]."""
        x = np.asarray(embeddings, np.float64).reshape(len(embeddings), -1)
        y = ((x - self.x_mean_) / self.x_std_) @ self.coef_ + self.y_mean_
        return np.clip(y, 0, 1).reshape(len(x), 3, THUMB, THUMB).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        from engine.atomic import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(buf, alpha=np.float64(self.alpha), x_mean=self.x_mean_, x_std=self.x_std_, y_mean=self.y_mean_,
                 coef=self.coef_)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "BlurryRidge":
        try:
            with np.load(path, allow_pickle=False) as z:
                m = cls(float(z["alpha"]))
                m.x_mean_, m.x_std_, m.y_mean_, m.coef_ = z["x_mean"], z["x_std"], z["y_mean"], z["coef"]
        except (OSError, KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: not a blurry-image ridge ({e})") from None
        return m
