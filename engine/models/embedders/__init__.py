"""Image and caption embedding models used as decoding targets, and the on-disk embedding cache.

``load_image_embedder("demo")`` gives the small demo net shipped with NeuroLens; ``load_image_embedder(PATH)`` a CLIP
vision model from a local transformers folder. Both follow ``ImageEmbedder``. Captions: ``text.load_text_embedder``.
torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelFolderError
from engine.models.embedders.base import ImageEmbedder
from engine.models.embedders.cache import cached_image_embeddings

__all__ = ["ImageEmbedder", "load_image_embedder", "cached_image_embeddings", "load_text_embedder"]


def load_image_embedder(spec: str = "demo", *, device: str | None = None) -> ImageEmbedder:
    """An image embedder from ``"demo"``, ``"pixels"`` (model-free baseline) or a local CLIP folder (transformers
    layout).

    Raises ``ModelFolderError`` naming the missing part (config.json, weights, preprocessor_config.json) when the
    folder is incomplete.
    """
    if spec == "stimulus-pixels":
        from engine.models.embedders.stimulus_pixels import StimulusPixelEmbedder

        return StimulusPixelEmbedder()
    if spec == "pixels":
        from engine.models.embedders.pixels import PixelEmbedder

        return PixelEmbedder()
    if spec == "demo":
        from engine.models.embedders.demo import DemoImageEmbedder

        return DemoImageEmbedder(device=device)
    folder = Path(spec).expanduser()
    own = _own_generator_embedder(folder, spec)
    if own is not None:
        return own
    if not folder.exists():
        raise ModelFolderError(folder, "the folder itself", "expected 'demo' or a local CLIP model folder")
    from engine.models.embedders.clip import ClipImageEmbedder

    return ClipImageEmbedder(folder, device=device)


def _own_generator_embedder(folder: Path, spec: str):
    """The PCA embedder of a generator folder written by ``neurolens generator train`` (or of its ``embedder/``)."""
    from engine.models.embedders.pca import PCAImageEmbedder, is_pca_folder

    for f in (folder / "embedder", folder):
        if is_pca_folder(f):
            return PCAImageEmbedder.load(f, spec=spec)
    return None


def load_text_embedder(spec: str = "demo", *, device: str | None = None):
    """A caption embedder (see ``engine.models.embedders.text``)."""
    from engine.models.embedders.text import load_text_embedder as _load

    return _load(spec, device=device)
