"""Decoding targets: the image embeddings a brain encoder learns to predict, one per stimulus image.

``target_embeddings(subject, data_config)`` returns ``(n_images, D)`` pooled or ``(n_images, T, D)`` token targets from
the configured image embedder, through the on-disk embedding cache (``engine.models.embedders``). ``"pixels"`` is a
model-free baseline target (a fixed random projection of 8×8 thumbnails) that needs no trained embedder.

``caption_targets(subject, spec)`` returns the ``(n_images, D)`` caption embeddings of the second target (MoRE-Brain's
text branch) from ``engine.models.embedders.text`` through the same cache.
"""

from __future__ import annotations

import hashlib

import numpy as np

from engine.errors import ConfigError, DataError

PIXELS = "pixels"


class PixelEmbedder:
    """Model-free image embedding: 8×8 block-mean thumbnails in [0, 1].

    Pooled: the centred thumbnail (192 values) times a fixed Gaussian projection (seed 0) to ``dim`` = 64.
    Tokens: the 16 patches of 2×2 pixels × 3 channels, shape (16, 12).
    """

    spec = PIXELS
    dim = 64
    token_shape = (16, 12)
    identity = "pixels-v1"

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._proj = (rng.standard_normal((192, self.dim)) / np.sqrt(192)).astype(np.float32)

    @staticmethod
    def thumbnails(images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 → (N, 8, 8, 3) float32 block means in [0, 1] (edges cropped to a multiple of 8)."""
        n, h, w, _ = images.shape
        if h < 8 or w < 8:
            raise ConfigError(f"pixels embedder: images must be at least 8×8, found {h}×{w}")
        bh, bw = h // 8, w // 8
        x = np.asarray(images[:, : bh * 8, : bw * 8], np.float32) / 255.0
        return x.reshape(n, 8, bh, 8, bw, 3).mean(axis=(2, 4))

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


def load_embedder(spec: str):
    """The image embedder named by a data config: ``"pixels"``, ``"demo"`` or a local model folder."""
    if spec == PIXELS:
        return PixelEmbedder()
    try:
        from engine.models.embedders import load_image_embedder
    except ImportError as e:
        raise ConfigError(f"data.embedder '{spec}': the image embedders are not available ({e}); "
                          f"use embedder 'pixels'") from None
    return load_image_embedder(spec)


def target_embeddings(images: np.ndarray, embedder_spec: str, kind: str) -> np.ndarray:
    """Targets for every stimulus image.

    Parameters
    ----------
    images : uint8 array (n_images, H, W, 3)
    embedder_spec : str
        ``DataConfig.embedder``.
    kind : {"pooled", "tokens"}

    Returns
    -------
    float32 array (n_images, D) or (n_images, T, D)
    """
    embedder = load_embedder(embedder_spec)
    tokens = kind == "tokens"
    if tokens and getattr(embedder, "token_shape", None) is None:
        raise ConfigError(f"data.target: embedder '{embedder_spec}' has no token embeddings; use target 'pooled'")
    if embedder_spec == PIXELS:
        return embedder.embed(np.asarray(images), tokens=tokens)
    from engine.models.embedders.cache import cached_image_embeddings

    return np.asarray(cached_image_embeddings(images, embedder, tokens=tokens), np.float32)


def caption_targets(subject, embedder_spec: str) -> np.ndarray:
    """Caption embeddings of every stimulus image, float32 ``(n_images, D)``.

    Parameters
    ----------
    subject : Subject
        Its ``stimuli.captions`` (one string per image) are embedded.
    embedder_spec : str
        ``DataConfig.caption_embedder``: ``"demo"`` or a local text-model folder.
    """
    captions = subject.stimuli.captions
    where = subject.path or subject.name
    if captions is None:
        raise DataError(where, "data.caption_embedder is set but the subject has no captions", key="stimuli.captions",
                        expected=f"{subject.n_images} captions (one per image)", found="none")
    if len(captions) != subject.n_images:
        raise DataError(where, "captions do not match the stimulus images", key="stimuli.captions",
                        expected=f"{subject.n_images} captions", found=len(captions))
    if any(not str(c).strip() for c in captions):
        empty = [i for i, c in enumerate(captions) if not str(c).strip()]
        raise DataError(where, "empty captions", key="stimuli.captions", expected="a non-empty caption per image",
                        found=f"{len(empty)} empty, first at image {empty[0]}")
    from engine.models.embedders import load_text_embedder
    from engine.models.embedders.cache import cached_text_embeddings

    embedder = load_text_embedder(embedder_spec)
    return np.asarray(cached_text_embeddings(list(captions), embedder), np.float32)


def array_digest(*arrays, block_rows: int = 4096) -> str:
    """SHA-256 (first 16 hex) of arrays' shapes, dtypes and bytes, read in row blocks (memory maps stay on disk)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}|{a.dtype}".encode())
        for s in range(0, max(1, a.shape[0]), block_rows):
            h.update(np.ascontiguousarray(a[s : s + block_rows]).tobytes())
    return h.hexdigest()[:16]
