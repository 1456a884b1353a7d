"""``ImageEmbedder``: the interface every image-embedding model (demo net, CLIP) offers, and shared helpers.

An embedder turns stimulus images into decoding targets: a pooled vector per image ``(N, dim)`` or a grid of tokens
``(N, T, D)``. ``identity`` names the model and its weights, so cached embeddings are never mixed up between models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engine.errors import DataError


@runtime_checkable
class ImageEmbedder(Protocol):
    """What a decoder needs from an image-embedding model.

    Attributes
    ----------
    spec : str
        How it was asked for: ``"demo"`` or a local folder path.
    dim : int
        Length of the pooled embedding.
    token_shape : tuple (T, D) or None
        Shape of the token embedding per image, None when the model has no tokens.
    identity : str
        Spec plus a hash of the weights; the embedding cache keys on it.
    """

    spec: str
    dim: int
    token_shape: tuple[int, int] | None
    identity: str

    def embed(self, images: np.ndarray, *, tokens: bool = False, batch_size: int = 64) -> np.ndarray:
        """Embed uint8 images ``(N, H, W, 3)``: float32 ``(N, dim)``, or ``(N, T, D)`` with ``tokens=True``."""
        ...


def check_images(images, where: str = "images") -> np.ndarray:
    """Validate a stimulus array: uint8 ``(N, H, W, 3)``. Returns it (as an ndarray, possibly a memory map)."""
    arr = images if isinstance(images, np.ndarray) else np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise DataError(where, "cannot embed these images", expected="uint8 array (n_images, H, W, 3)",
                        found=f"{arr.dtype} array {tuple(arr.shape)}")
    return arr


def file_digest(paths, *, length: int = 16) -> str:
    """SHA-256 over the bytes of ``paths`` (in the order given), as ``length`` hex characters."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:length]


def batches(n: int, batch_size: int):
    """Consecutive slices covering ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def torch_device(device: str | None = None):
    """The torch device to run on: the one asked for, else CUDA when present, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
