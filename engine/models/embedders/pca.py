"""The image embedder of a generator trained on the user's images: whitened principal components of those images.

Written by ``neurolens generator train`` into ``GEN/embedder/`` (``embedder.json`` + ``pca.safetensors``): the mean
image and the top ``k`` principal axes of the generator's training images (the subject's training stimuli and the
prior images), at the stimulus resolution, one channel for grey sets. ``embed`` gives the whitened component scores
``(N, k)``: the condition the generator learns to invert, and the target a brain encoder of that route predicts
(``--set data.embedder=GEN``). Principal components are what a linear decoder of small images recovers best; the
generator adds what they leave out (sharp strokes and edges).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import ModelFolderError

KIND = "pca"
CONFIG_FILE = "embedder.json"
WEIGHTS_FILE = "pca.safetensors"


class PCAImageEmbedder:
    """Whitened PCA scores of images; ``fit`` on uint8 ``(N, H, W, 3)`` images, ``save``/``load`` a folder."""

    token_shape = None

    def __init__(self, mean: np.ndarray, components: np.ndarray, scale: np.ndarray, *, image_shape, grey: bool,
                 spec: str = "pca") -> None:
        self.mean = np.asarray(mean, np.float32)  # (P,)
        self.components = np.asarray(components, np.float32)  # (k, P)
        self.scale = np.asarray(scale, np.float32)  # (k,) sd of each score
        self.image_shape = tuple(int(s) for s in image_shape)  # (H, W)
        self.grey = bool(grey)
        self.spec = spec
        self.dim = int(self.components.shape[0])
        h = __import__("hashlib").sha256(self.components.tobytes() + self.mean.tobytes()).hexdigest()[:16]
        self.identity = f"pca:{h}"

    @staticmethod
    def pixels(images: np.ndarray, grey: bool) -> np.ndarray:
        x = np.asarray(images)
        x = x[..., :1] if grey else x
        return x.reshape(len(x), -1).astype(np.float32) / 255.0

    @classmethod
    def fit(cls, images: np.ndarray, k: int, *, grey: bool, seed: int = 0) -> "PCAImageEmbedder":
        x = cls.pixels(images, grey)
        mean = x.mean(0)
        k = int(min(k, x.shape[0] - 1, x.shape[1]))
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        scale = s[:k] / np.sqrt(max(1, x.shape[0] - 1))
        return cls(mean, vt[:k], np.maximum(scale, 1e-6), image_shape=images.shape[1:3], grey=grey)

    def embed(self, images: np.ndarray, *, tokens: bool = False, batch_size: int = 1024) -> np.ndarray:
        if tokens:
            raise ValueError("the PCA image embedder has no token embeddings; use target 'pooled'")
        images = np.asarray(images)
        if tuple(images.shape[1:3]) != self.image_shape:
            from engine.errors import DataError

            raise DataError(self.spec, "images of another size than the embedder was fitted on", key="images",
                            expected=f"{self.image_shape[0]}×{self.image_shape[1]}",
                            found=f"{images.shape[1]}×{images.shape[2]}")
        out = [(self.pixels(images[s:s + batch_size], self.grey) - self.mean) @ self.components.T / self.scale
               for s in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def save(self, folder) -> Path:
        from safetensors.numpy import save_file

        from engine.atomic import atomic_dir

        folder = Path(folder)
        with atomic_dir(folder, overwrite=True) as tmp:
            save_file({"mean": self.mean, "components": self.components, "scale": self.scale},
                      str(tmp / WEIGHTS_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps({"kind": KIND, "dim": self.dim, "grey": self.grey,
                                                       "image_shape": list(self.image_shape)}, indent=2))
        return folder

    @classmethod
    def load(cls, folder, *, spec: str | None = None) -> "PCAImageEmbedder":
        from safetensors.numpy import load_file

        folder = Path(folder)
        for part in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / part).is_file():
                raise ModelFolderError(folder, part, "the PCA image embedder of a generator trained with "
                                                     "'neurolens generator train'")
        meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        try:
            w = load_file(str(folder / WEIGHTS_FILE))
            return cls(w["mean"], w["components"], w["scale"], image_shape=meta["image_shape"],
                       grey=meta["grey"], spec=spec or str(folder))
        except (KeyError, OSError, ValueError) as e:
            raise ModelFolderError(folder, f"a valid {WEIGHTS_FILE}", str(e)[:200]) from None


def is_pca_folder(folder) -> bool:
    p = Path(folder) / CONFIG_FILE
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError):
        return False
