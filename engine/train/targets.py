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
from engine.models.embedders.pixels import PIXELS
from engine.models.embedders.stimulus_pixels import STIMULUS_PIXELS


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
    from engine.models.embedders import load_image_embedder

    embedder = load_image_embedder(embedder_spec)
    tokens = kind == "tokens"
    if tokens and getattr(embedder, "token_shape", None) is None:
        raise ConfigError(f"data.target: embedder '{embedder_spec}' has no token embeddings; use target 'pooled'")
    if embedder_spec in (PIXELS, STIMULUS_PIXELS):
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


def subject_data_hash(subject) -> str:
    """The hash a run's provenance keeps of its subject's data: betas, each trial's image and split."""
    return array_digest(subject.betas, np.asarray(subject.trials.image_index), np.asarray(subject.trials.split))
