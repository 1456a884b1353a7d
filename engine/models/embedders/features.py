"""Feature extractors and classifiers for the feature-based metrics, all from local folders (no hub, no torchvision).

Specs accepted by ``load_feature_extractor``:

- ``"demo"``: the demo image embedder (``engine.models.embedders.load_image_embedder("demo")``), pooled embedding.
- a local CLIP folder (``config.json`` with ``model_type`` ``clip`` or ``clip_vision_model``): the projected image
  embedding (``CLIPVisionModelWithProjection.image_embeds``), input resized (bilinear) to the model's image size (224
  for ViT-L/14) and normalised with the folder's CLIP mean/std, as MindEyeV2's CLIP row.
- ``"PATH:LAYER"``: any local transformers vision model (``AutoModel``, ``output_hidden_states=True``); ``LAYER`` is an
  index into ``hidden_states`` (``0`` = embeddings, ``-1`` = last), ``last`` (``last_hidden_state``) or ``pooler``
  (``pooler_output``). A plain ``PATH`` of a non-CLIP model means ``pooler``. Input: bilinear resize to the folder's
  processor size (else the model's ``image_size``, else 224), its mean/std (else ImageNet's).
- ``"NAME=SPEC"``: the same, shown under ``NAME``. Naming one of the torchvision rows of the published tables
  (``alexnet2``, ``alexnet5``, ``inception``, ``effnet``, ``swav``) fills that row with a local equivalent, labelled as
  such. Without one, those rows are reported unavailable (``TORCHVISION_ROWS``), never faked.

Every extractor maps float images ``(n_images, H, W, 3)`` in [0, 1] (the 256×256 evaluation images) to float32
features ``(n_images, n_features)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import NeuroLensError
from engine.metrics.lowlevel import resize
from engine.models.construction import MODEL_BUILD_LOCK

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The published rows that need torchvision / torch.hub weights: name -> (table label, metric kind, network)
TORCHVISION_ROWS = {
    "alexnet2": ("AlexNet(2)", "2-way", "torchvision AlexNet IMAGENET1K_V1, features.4"),
    "alexnet5": ("AlexNet(5)", "2-way", "torchvision AlexNet IMAGENET1K_V1, features.11"),
    "inception": ("InceptionV3", "2-way", "torchvision Inception v3 DEFAULT, avgpool"),
    "effnet": ("EffNet-B", "distance", "torchvision EfficientNet-B1 DEFAULT, avgpool"),
    "swav": ("SwAV", "distance", "SwAV ResNet-50 (torch.hub facebookresearch/swav), avgpool"),
}


def torchvision_unavailable_reason(name: str) -> str:
    label, _, net = TORCHVISION_ROWS[name]
    return (f"{label} needs {net}; NeuroLens has no torchvision or model hub. Pass a local transformers-format "
            f"equivalent as --features {name}=PATH[:LAYER] to fill this row")


class FeatureUnavailable(NeuroLensError):
    """A feature extractor or classifier that cannot be used here; the message is the reason shown in tables."""


@dataclass
class FeatureExtractor:
    """A named image → feature function.

    Attributes
    ----------
    name : str
        Column label (``"demo"``, ``"CLIP"``, ``"AlexNet(2)"``...).
    spec : str
        What the user passed.
    protocol : str
        One line: network, layer, preprocessing.
    fn : callable
        float images (n, H, W, 3) in [0, 1] -> (n, n_features) float32, one batch.
    row : str or None
        The published row this fills (a ``TORCHVISION_ROWS`` key, or ``"clip"``), else None.
    """

    name: str
    spec: str
    protocol: str
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    row: str | None = None
    batch_size: int = 32

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        out = [np.asarray(self.fn(images[s : s + self.batch_size]), np.float32).reshape(
            min(self.batch_size, len(images) - s), -1) for s in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def to_uint8(images) -> np.ndarray:
    """Float images in [0, 1] → uint8 (rounded), uint8 unchanged."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _model_type(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as exc:
        raise FeatureUnavailable(f"{folder}/config.json: cannot be read ({exc})") from exc


def _split_spec(spec: str) -> tuple[str | None, str, str | None]:
    """``NAME=PATH:LAYER`` → (name, path, layer); a ``:`` that is part of an existing path is not a layer."""
    name = None
    if "=" in spec and not Path(spec).exists():
        name, spec = spec.split("=", 1)
    if spec == "demo" or Path(spec).exists() or ":" not in spec:
        return name, spec, None
    path, layer = spec.rsplit(":", 1)
    return name, path, layer


def load_feature_extractor(spec: str, *, device: str | None = None, batch_size: int = 32) -> FeatureExtractor:
    """Build the feature extractor named by ``spec`` (see module docstring).

    Raises
    ------
    FeatureUnavailable
        With the reason (unknown torchvision row without a local equivalent, missing folder, no demo embedder).
    """
    name, path, layer = _split_spec(spec)
    row = None
    if name is not None and name.lower() in TORCHVISION_ROWS:
        row = name.lower()
        name = f"{TORCHVISION_ROWS[row][0]} [local equivalent]"
    if path.lower() in TORCHVISION_ROWS and name is None:
        raise FeatureUnavailable(torchvision_unavailable_reason(path.lower()))
    if path == "demo":
        ext = _demo_extractor(device)
    else:
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FeatureUnavailable(f"{folder}: not a local transformers model folder (no config.json)")
        if layer is None and _model_type(folder) in ("clip", "clip_vision_model"):
            ext = _clip_extractor(folder, device)
        else:
            ext = _hidden_state_extractor(folder, layer or "pooler", device)
    ext.spec = spec
    ext.batch_size = batch_size
    if name is not None:
        ext.name = name
        ext.row = row or ext.row
    return ext


def _demo_extractor(device) -> FeatureExtractor:
    try:
        from engine.models.embedders import load_image_embedder

        embedder = load_image_embedder("demo", device=device)
    except (ImportError, NeuroLensError, OSError) as exc:
        raise FeatureUnavailable(f"the demo image embedder is not available ({exc})") from exc

    def fn(images):
        return embedder.embed(to_uint8(images), tokens=False)

    return FeatureExtractor(name="demo", spec="demo", fn=fn,
                            protocol="demo image embedder, pooled embedding, uint8 256×256 input")


def _processor_settings(folder: Path, default_size: int, mean, std) -> tuple[tuple[int, int], tuple, tuple]:
    """Input size and normalisation from ``preprocessor_config.json`` (read as JSON: no processor class needed)."""
    size = (default_size, default_size)
    p = folder / "preprocessor_config.json"
    if p.is_file():
        cfg = json.loads(p.read_text())
        s = cfg.get("crop_size") if cfg.get("do_center_crop", False) else cfg.get("size")
        s = s if s is not None else cfg.get("size")
        if isinstance(s, dict):
            if "height" in s:
                size = (int(s["height"]), int(s["width"]))
            elif "shortest_edge" in s:
                size = (int(s["shortest_edge"]),) * 2
        elif isinstance(s, int):
            size = (s, s)
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
    return size, mean, std


def _pixel_values(images, size, mean, std, device):
    import torch

    x = resize(images, size)
    x = (x - np.asarray(mean)) / np.asarray(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)).to(device)


def _load(cls, folder: Path, what: str, **kwargs):
    try:
        with MODEL_BUILD_LOCK:  # see engine/models/construction.py
            return cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise FeatureUnavailable(f"{folder}: cannot load a {what} ({str(exc).splitlines()[0]})") from exc


def _device(device):
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _clip_extractor(folder: Path, device) -> FeatureExtractor:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    try:
        cfg = CLIPVisionConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise FeatureUnavailable(f"{folder}: cannot read a CLIP vision config ({exc})") from exc
    model = _load(CLIPVisionModelWithProjection, folder, "CLIP vision model", config=cfg)
    dev = _device(device)
    model.to(dev).eval().float()
    size = (int(cfg.image_size),) * 2
    _, mean, std = _processor_settings(folder, cfg.image_size, CLIP_MEAN, CLIP_STD)

    def fn(images):
        with torch.inference_mode():
            return model(pixel_values=_pixel_values(images, size, mean, std, dev)).image_embeds.float().cpu().numpy()

    return FeatureExtractor(name="CLIP", spec=str(folder), fn=fn, row="clip",
                            protocol=f"CLIP image embedding (image_embeds, {cfg.projection_dim}-d) of {folder.name}; "
                                     f"bilinear resize to {size[0]}, CLIP mean/std")


def _auto_vision_model(folder: Path, auto_model, what: str, device):
    """(config, model in eval mode on the device, device, input size, mean, std) of a local transformers folder loaded
    through ``auto_model`` (an ``AutoModel*`` class); ``FeatureUnavailable`` naming ``what`` when it cannot be read."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise FeatureUnavailable(f"{folder}: cannot read the {what} config ({exc})") from exc
    model = _load(auto_model, folder, what, config=cfg)
    dev = _device(device)
    model.to(dev).eval().float()
    default = int(getattr(cfg, "image_size", 224) or 224)
    size, mean, std = _processor_settings(folder, default, IMAGENET_MEAN, IMAGENET_STD)
    return cfg, model, dev, size, mean, std


def _hidden_state_extractor(folder: Path, layer: str, device) -> FeatureExtractor:
    import torch
    from transformers import AutoModel

    cfg, model, dev, size, mean, std = _auto_vision_model(folder, AutoModel, "transformers vision model", device)
    if layer not in ("pooler", "last"):
        try:
            index = int(layer.removeprefix("hidden_states."))
        except ValueError:
            raise FeatureUnavailable(f"{folder}: unknown layer {layer!r} (expected an index into hidden_states, "
                                     f"'last' or 'pooler')") from None
    else:
        index = None

    def fn(images):
        with torch.inference_mode():
            out = model(pixel_values=_pixel_values(images, size, mean, std, dev), output_hidden_states=True)
            if layer == "pooler":
                feat = getattr(out, "pooler_output", None)
                if feat is None:
                    raise FeatureUnavailable(f"{folder}: model has no pooler_output; pass PATH:LAYER")
            elif layer == "last":
                feat = out.last_hidden_state
            else:
                hs = out.hidden_states
                if not -len(hs) <= index < len(hs):
                    raise FeatureUnavailable(f"{folder}: layer {index} out of range (model has {len(hs)} hidden states)")
                feat = hs[index]
            return feat.float().reshape(feat.shape[0], -1).cpu().numpy()

    label = f"{folder.name}:{layer}"
    return FeatureExtractor(name=label, spec=f"{folder}:{layer}", fn=fn,
                            protocol=f"{cfg.model_type} {folder.name}, layer {layer} (flattened); bilinear resize to "
                                     f"{size[0]}×{size[1]}, mean {tuple(round(m, 4) for m in mean)} std "
                                     f"{tuple(round(s, 4) for s in std)}")


@dataclass
class ImageClassifier:
    """A local image classifier: ``logits(images) -> (n, n_classes)``; ``labels[k]`` names class k."""

    spec: str
    labels: list[str]
    protocol: str
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    batch_size: int = 32

    def logits(self, images) -> np.ndarray:
        images = np.asarray(images)
        return np.concatenate([np.asarray(self.fn(images[s : s + self.batch_size]), np.float64)
                               for s in range(0, len(images), self.batch_size)])


def load_classifier(path, *, device: str | None = None, batch_size: int = 32) -> ImageClassifier:
    """A transformers image-classification folder (``AutoModelForImageClassification``) as an ``ImageClassifier``."""
    import torch
    from transformers import AutoModelForImageClassification

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FeatureUnavailable(f"{folder}: not a local transformers image classifier (no config.json)")
    cfg, model, dev, size, mean, std = _auto_vision_model(folder, AutoModelForImageClassification,
                                                          "image classifier", device)
    n = int(cfg.num_labels)
    id2label = getattr(cfg, "id2label", None) or {}
    labels = [str(id2label.get(k, id2label.get(str(k), k))) for k in range(n)]

    def fn(images):
        with torch.inference_mode():
            return model(pixel_values=_pixel_values(images, size, mean, std, dev)).logits.float().cpu().numpy()

    return ImageClassifier(spec=str(folder), labels=labels, fn=fn, batch_size=batch_size,
                           protocol=f"{cfg.model_type} classifier {folder.name} ({n} classes); bilinear resize to "
                                    f"{size[0]}×{size[1]}, its mean/std")
