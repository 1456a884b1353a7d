"""Real CLIP image embeddings from a local folder (transformers layout), offline.

The folder is what ``CLIPVisionModelWithProjection.save_pretrained`` + ``CLIPImageProcessor.save_pretrained`` write
(or a full ``CLIPModel`` folder, e.g. a downloaded ``openai/clip-vit-large-patch14``): ``config.json``,
``preprocessor_config.json`` and safetensors weights. Pooled embedding = the projected image embedding
(``image_embeds``, ``projection_dim``); tokens = the last hidden state's patch tokens (CLS dropped),
``(n_patches, hidden_size)``. Pickled ``pytorch_model.bin`` weights are refused: NeuroLens never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import ModelFolderError
from engine.models.embedders.base import batches, check_images, file_digest, torch_device
from engine.models.construction import MODEL_BUILD_LOCK

SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors weight files of a transformers folder (single file or shards)."""
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelFolderError(folder, f"weight shard {missing[0]}", "listed in model.safetensors.index.json")
        return [index] + [folder / s for s in shards]
    return []


def check_model_folder(path, *, needs: tuple[str, ...], what: str) -> Path:
    """Raise ``ModelFolderError`` naming the first missing part of a transformers model folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFolderError(folder, "the folder itself", f"expected a local {what} folder")
    if not (folder / "config.json").is_file():
        raise ModelFolderError(folder, "config.json", f"expected a {what} saved with save_pretrained")
    if not weight_files(folder):
        if (folder / "pytorch_model.bin").is_file():
            raise ModelFolderError(folder, "model.safetensors",
                                   "found only pytorch_model.bin, a pickle NeuroLens does not load; convert it to "
                                   "safetensors")
        raise ModelFolderError(folder, "model.safetensors", f"the {what} weights")
    for name in needs:
        if not (folder / name).is_file():
            raise ModelFolderError(folder, name, f"needed by the {what}")
    return folder


def image_processor_class():
    """The PIL-based CLIP processor when this transformers has it (the default one wants torchvision)."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


class ClipImageEmbedder:
    """CLIP vision tower + projection loaded from ``folder``.

    Parameters
    ----------
    folder : path
        Local transformers folder (see module docstring).
    device : str, optional
        Torch device; CUDA when present by default.
    """

    def __init__(self, folder, *, device: str | None = None) -> None:
        folder = check_model_folder(folder, needs=("preprocessor_config.json",), what="CLIP image model")
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        try:
            cfg = CLIPVisionConfig.from_pretrained(folder, local_files_only=True)
            with MODEL_BUILD_LOCK:  # see engine/models/construction.py
                self.model = CLIPVisionModelWithProjection.from_pretrained(folder, config=cfg, local_files_only=True,
                                                                           use_safetensors=True)
            self.processor = image_processor_class().from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFolderError(folder, "a loadable CLIP vision model", str(exc).splitlines()[0]) from exc
        self.device = torch_device(device)
        self.model.to(self.device).eval().float()
        self.spec = str(folder)
        self.dim = int(cfg.projection_dim)
        side = int(cfg.image_size) // int(cfg.patch_size)
        self.token_shape = (side * side, int(cfg.hidden_size))
        self.identity = f"clip:{folder.resolve()}:{file_digest(weight_files(folder) + [folder / 'config.json'])}"

    def embed(self, images: np.ndarray, *, tokens: bool = False, batch_size: int = 64) -> np.ndarray:
        """Embed uint8 images ``(N, H, W, 3)``: float32 ``(N, projection_dim)`` or ``(N, n_patches, hidden_size)``."""
        import torch

        images = check_images(images)
        n = images.shape[0]
        out = np.empty((n, *self.token_shape) if tokens else (n, self.dim), np.float32)
        with torch.inference_mode():
            for sl in batches(n, batch_size):
                batch = [np.asarray(im) for im in images[sl]]
                pix = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                res = self.model(pixel_values=pix)
                feat = res.last_hidden_state[:, 1:, :] if tokens else res.image_embeds
                out[sl] = feat.float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"ClipImageEmbedder({self.spec!r}, dim={self.dim}, token_shape={self.token_shape})"
