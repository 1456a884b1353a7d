"""On-disk cache of image and caption embeddings, keyed by the stimuli and the embedding model.

A stimulus set is embedded once per model: ``$NEUROLENS_CACHE_DIR/embeddings/<key>.npy`` (default cache folder
``~/.cache/neurolens``), where the key hashes the image array (shape, dtype and bytes) or the caption strings, the
embedder's ``identity`` (spec + weights hash) and, for images, whether tokens were asked for. Files are written
atomically and read with ``allow_pickle=False``; a damaged file is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_bytes
from engine.models.embedders.base import ImageEmbedder, check_images

_KEY_VERSION = "1"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The embeddings folder: ``cache_dir``, else ``$NEUROLENS_CACHE_DIR/embeddings``, else
    ``~/.cache/neurolens/embeddings``."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("NEUROLENS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "neurolens")
    return Path(base) / "embeddings"


def images_digest(images: np.ndarray, *, block_rows: int = 256) -> str:
    """SHA-256 of a stimulus array's shape, dtype and pixels, read in row blocks (memory maps stay on disk)."""
    h = hashlib.sha256(f"{images.shape}|{images.dtype}".encode())
    for start in range(0, images.shape[0], block_rows):
        h.update(np.ascontiguousarray(images[start : start + block_rows]).tobytes())
    return h.hexdigest()


def embedding_key(images: np.ndarray, embedder: ImageEmbedder, *, tokens: bool) -> str:
    h = hashlib.sha256()
    for part in (_KEY_VERSION, images_digest(images), embedder.identity, "tokens" if tokens else "pooled"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def cached_image_embeddings(images, embedder: ImageEmbedder, *, tokens: bool = False,
                            cache_dir: str | os.PathLike | None = None, batch_size: int = 64) -> np.ndarray:
    """Embeddings of ``images`` by ``embedder``, from the cache when present, else computed and stored.

    Parameters
    ----------
    images : uint8 array (n_images, H, W, 3)
    embedder : ImageEmbedder
    tokens : bool
        Token embeddings ``(n_images, T, D)`` instead of pooled ``(n_images, dim)``.
    cache_dir : path, optional
        Folder for the ``.npy`` files (default: see ``cache_root``).

    Returns
    -------
    float32 array (n_images, dim) or (n_images, T, D)
    """
    images = check_images(images)
    if tokens and embedder.token_shape is None:
        raise ValueError(f"image embedder {embedder.spec!r} has no token embeddings; use tokens=False")
    expected_tail = tuple(embedder.token_shape) if tokens else (embedder.dim,)
    return _cached(embedding_key(images, embedder, tokens=tokens), (images.shape[0], *expected_tail), cache_dir,
                   lambda: embedder.embed(images, tokens=tokens, batch_size=batch_size))


def texts_digest(texts) -> str:
    """SHA-256 of a list of strings (order matters)."""
    return hashlib.sha256(json.dumps([str(t) for t in texts], ensure_ascii=False).encode()).hexdigest()


def cached_text_embeddings(texts, embedder, *, cache_dir: str | os.PathLike | None = None,
                           batch_size: int = 64) -> np.ndarray:
    """Embeddings ``(len(texts), embedder.dim)`` of captions by a ``TextEmbedder``, through the same cache."""
    texts = [str(t) for t in texts]
    h = hashlib.sha256()
    for part in (_KEY_VERSION, "text", texts_digest(texts), embedder.identity):
        h.update(part.encode())
        h.update(b"\0")
    return _cached(h.hexdigest()[:32], (len(texts), embedder.dim), cache_dir,
                   lambda: embedder.embed(texts, batch_size=batch_size))


def _cached(key: str, shape: tuple, cache_dir, compute) -> np.ndarray:
    """The float32 array of ``shape`` stored under ``key``, else ``compute()`` stored there."""
    path = cache_root(cache_dir) / f"{key}.npy"
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.dtype == np.float32 and arr.shape == tuple(shape):
                return arr
        except (OSError, ValueError):
            pass  # damaged or foreign file: recompute below and overwrite it
    arr = np.ascontiguousarray(compute(), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass  # a read-only cache folder must not stop the computation
    return arr
