"""Small images scored the classic way: at the stimulus's own size, with identification in pixel space.

The NSD protocol (``lowlevel``: every image to 256 px, PixCorr and SSIM at 425 px) is for NSD-size photographs. For
small stimulus sets (digits, letters, 10×10 patterns; larger side up to ``NATIVE_MAX`` px) the papers of the field
score at the stimulus's own resolution:

- PixCorr: Pearson r of the pixel values (one channel for grey stimuli), reconstruction area-resized to the stimulus
  size;
- SSIM: ``lowlevel.ssim_grey`` at that size (Gaussian window, sigma 1.5);
- n-way pixel identification: a reconstruction is identified when it correlates more with its own stimulus than
  with every other test stimulus (all ``n`` test images are the candidates; chance ``1/n``);
- 2-way pixel identification: the share of the other test stimuli its own stimulus beats (chance 0.5).

``NativeProtocol.for_index`` returns None for NSD-size images, so their rows keep the NSD protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.metrics.identification import pearson_matrix, two_way_scores
from engine.metrics.lowlevel import area_resize, ssim_grey

NATIVE_MAX = 56  # stimuli up to this size (larger side, px: digits 28, letters 56, patterns 10) are scored natively
NSD_PROTOCOL = "NSD (256 → 425 px)"


def native_protocol_name(h: int, w: int) -> str:
    return f"native {h}×{w} px"


def _grey(x: np.ndarray) -> bool:
    return bool(np.allclose(x[..., 0], x[..., 1]) and np.allclose(x[..., 1], x[..., 2]))


def to_native(images: np.ndarray, size: tuple[int, int], grey: bool) -> np.ndarray:
    """float ``(n, H, W, 3)`` in [0, 1] or uint8 → ``(n, h, w, C)`` float64 at ``size`` (area), C = 1 if grey."""
    x = area_resize(images, size)
    return x[..., :1] if grey else x


def n_way_top1(gt: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Per item: 1.0 when ``recon[i]`` correlates more with ``gt[i]`` than with every other ``gt[j]`` (ties fail)."""
    c = pearson_matrix(gt.reshape(len(gt), -1), recon.reshape(len(recon), -1))  # (gt j, recon i)
    own = np.diag(c)
    others = c - np.diag(np.full(len(c), np.inf))
    return (own > others.max(axis=0)).astype(np.float64)


def pixcorr_native(gt: np.ndarray, recon: np.ndarray) -> np.ndarray:
    g = gt.reshape(len(gt), -1)
    r = recon.reshape(len(recon), -1)
    g = g - g.mean(1, keepdims=True)
    r = r - r.mean(1, keepdims=True)
    den = np.sqrt((g * g).sum(1) * (r * r).sum(1))
    return np.where(den > 0, (g * r).sum(1) / np.maximum(den, 1e-300), 0.0)


def score_native(gt: np.ndarray, recon: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-item metric of the native protocol; ``gt``/``recon`` already ``to_native``."""
    grey_gt = gt[..., 0] if gt.shape[-1] == 1 else gt @ np.array([0.2125, 0.7154, 0.0721])
    grey_rc = recon[..., 0] if recon.shape[-1] == 1 else recon @ np.array([0.2125, 0.7154, 0.0721])
    # sigma 1.5 (11 taps) needs 11 px; smaller stimuli (8-10 px) use sigma 0.8 (7 taps)
    sigma = 1.5 if min(gt.shape[1:3]) >= 11 else 0.8
    out = {"PixCorr": pixcorr_native(gt, recon), "SSIM": ssim_grey(grey_gt, grey_rc, sigma=sigma)}
    n = len(gt)
    if n >= 2:
        out[f"{n}-way pixels"] = n_way_top1(gt, recon)
        out["2-way pixels"] = two_way_scores(gt.reshape(n, -1), recon.reshape(n, -1))
    return out


@dataclass
class NativeProtocol:
    """The ground truth of a reconstruction folder at its own size, and how to score an image set against it."""

    size: tuple[int, int]
    grey: bool
    gt: np.ndarray  # (n, h, w, C) float64

    @property
    def name(self) -> str:
        return native_protocol_name(*self.size)

    @classmethod
    def for_index(cls, folder: Path, gt_files, load_png) -> "NativeProtocol | None":
        """None when the stimuli are NSD-size (larger side over ``NATIVE_MAX``) or differ in size."""
        images = [load_png(folder, r) for r in gt_files]
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            return None
        h, w, _ = images[0].shape
        if max(h, w) > NATIVE_MAX:
            return None
        stack = np.stack(images)
        grey = _grey(stack)
        return cls((h, w), grey, to_native(stack, (h, w), grey))

    def score(self, folder: Path, files, load_png) -> dict[str, np.ndarray]:
        recon = np.stack([load_png(folder, r) for r in files])
        return score_native(self.gt, to_native(recon, self.size, self.grey))

    def score_array(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Score float ``(n, H, W, 3)`` images in [0, 1] (e.g. a blend) at the native size."""
        return score_native(self.gt, to_native(images, self.size, self.grey))

    def protocols(self, n: int) -> dict[str, str]:
        h, w = self.size
        ch = "the grey values" if self.grey else "all RGB values"
        return {
            "PixCorr": f"small images, native protocol: Pearson r of {ch} at the stimulus's own {h}×{w} px "
                       "(reconstructions area-resized to it); mean over items",
            "SSIM": f"small images, native protocol: grey SSIM at {h}×{w} px, Gaussian window sigma "
                    f"{1.5 if min(h, w) >= 11 else 0.8}, population covariance, data range 1; mean over items",
            f"{n}-way pixels": f"n-way identification in pixel space: a reconstruction is identified when its Pearson "
                               f"r with its own stimulus beats every other of the {n} test stimuli ({h}×{w} px); "
                               f"chance {1 / n:.4f}",
            "2-way pixels": f"two-way identification in pixel space, exhaustive over the {n - 1} other test stimuli "
                            f"(Pearson r at {h}×{w} px); chance 0.5",
        }
