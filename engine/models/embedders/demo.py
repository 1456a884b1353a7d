"""The demo image-embedding model: a small conv net trained on the demo stimuli, with CLIP's interface.

It stands in for CLIP on the demo subject so decoding and reconstruction run on a CPU. Trained (see
``resources/build/build_demo_embedder.py``) supervised on what the demo world varies: linear heads on the pooled
vector read the object's category, colour, position, size, rotation and flip and the background's type and colour,
and a 16×16 thumbnail of the image is decoded linearly from the pooled vector and from the tokens, so both carry what
was seen and where (held-out figures in ``config.json``'s ``recipe.heldout``).

Shapes: input uint8 ``(N, H, W, 3)`` (resized to 64×64); pooled ``(N, 128)``; tokens ``(N, 16, 128)`` = a 4×4 grid
of spatial tokens in row-major order (token ``4*i + j`` covers rows ``16i..16i+15`` and columns ``16j..16j+15`` of the
64×64 image).

The weights ship in ``resources/models/demo-image-embedder/`` (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.config import Config
from engine.errors import CheckpointError, ConfigError, ModelFolderError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.models.embedders.base import batches, check_images, file_digest, torch_device
from engine.models.construction import MODEL_BUILD_LOCK

FOLDER_NAME = "demo-image-embedder"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class DemoEmbedderConfig(Config):
    """Architecture of ``DemoEmbedderNet`` (stored in ``config.json``)."""

    input_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 128)
    token_dim: int = 128
    dim: int = 128

    @property
    def grid(self) -> int:
        return self.input_size // 2 ** len(self.channels)

    @property
    def token_shape(self) -> tuple[int, int]:
        return (self.grid * self.grid, self.token_dim)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.GELU())


class DemoEmbedderNet(nn.Module):
    """Conv encoder: 64×64 image → (grid², token_dim) spatial tokens and a position-aware pooled vector.

    ``forward(x)`` takes a float batch ``(B, 3, S, S)`` normalised by ``normalise`` and returns ``(pooled, tokens)``
    of shapes ``(B, dim)`` and ``(B, grid², token_dim)``.
    """

    def __init__(self, config: DemoEmbedderConfig = DemoEmbedderConfig()) -> None:
        super().__init__()
        self.config = config
        layers, cin = [], 3
        for c in config.channels:
            layers.append(_conv(cin, c, 2))
            cin = c
        layers.append(_conv(cin, cin, 1))
        self.features = nn.Sequential(*layers)
        self.to_tokens = nn.Linear(cin, config.token_dim)
        self.token_norm = nn.LayerNorm(config.token_dim)
        # The pooled vector reads the whole grid (not a mean), so it keeps where the object is.
        self.pool = nn.Linear(config.token_shape[0] * config.token_dim, config.dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)  # (B, C, g, g)
        tokens = self.token_norm(self.to_tokens(f.flatten(2).transpose(1, 2)))  # (B, g², token_dim)
        pooled = self.pool(tokens.flatten(1))
        return pooled, tokens


def normalise(images_u8: np.ndarray | torch.Tensor, size: int, device=None) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` → float ``(N, 3, size, size)``, resized (antialiased bilinear), centred and scaled."""
    # A copy: stimulus arrays are often read-only memory maps, which torch will not wrap.
    x = torch.from_numpy(np.array(images_u8, dtype=np.uint8, copy=True)) if isinstance(images_u8, np.ndarray) \
        else images_u8
    x = x.to(device=device).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - 0.5) / 0.25


def default_folder() -> Path:
    from engine.resources import resource_path

    return resource_path("models", FOLDER_NAME)


def save_demo_embedder(net: DemoEmbedderNet, folder, *, recipe: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (the encoder only) into ``folder``, atomically."""
    from engine.atomic import atomic_dir, atomic_save_safetensors

    folder = Path(folder)
    meta = {"class": "DemoEmbedderNet", "schema_version": 1, "config": net.config.to_dict(),
            "dim": net.config.dim, "token_shape": list(net.config.token_shape), "recipe": recipe or {}}
    with atomic_dir(folder, overwrite=True) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        atomic_save_safetensors(tmp / WEIGHTS_FILE, net.state_dict())
        # Shipped files: readable by everyone (the temporary files start private).
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
    return folder


def load_demo_net(folder=None) -> tuple[DemoEmbedderNet, dict]:
    """The trained net and its ``config.json`` content, from ``folder`` (default: the shipped weights)."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else default_folder()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ModelFolderError(folder, name, "the demo image embedder; rebuild it with "
                                                 "python resources/build/build_demo_embedder.py")
    meta = read_object(folder / CONFIG_FILE)
    if meta.get("class") != "DemoEmbedderNet":
        raise CheckpointError(f"{folder / CONFIG_FILE}: key 'class': expected 'DemoEmbedderNet', "
                              f"found {meta.get('class')!r}")
    try:
        config = DemoEmbedderConfig.from_dict(meta.get("config", {}), "config", source=folder / CONFIG_FILE)
    except ConfigError as e:  # a damaged model folder, not a user's config
        raise CheckpointError(str(e)) from None
    with MODEL_BUILD_LOCK:  # see engine/models/construction.py
        net = DemoEmbedderNet(config)
    state = load_file(str(folder / WEIGHTS_FILE))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: weights do not match the config "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return net.eval(), meta


class DemoImageEmbedder:
    """The demo embedding model behind the ``ImageEmbedder`` interface (``spec = "demo"``).

    Parameters
    ----------
    folder : path, optional
        Weights folder; the shipped ``resources/models/demo-image-embedder`` by default.
    device : str, optional
        Torch device; CUDA when present by default.
    """

    def __init__(self, folder=None, *, device: str | None = None) -> None:
        folder = Path(folder) if folder is not None else default_folder()
        self.net, meta = load_demo_net(folder)
        self.device = torch_device(device)
        self.net.to(self.device)
        cfg = self.net.config
        self.spec = "demo"
        self.dim = int(cfg.dim)
        self.token_shape = tuple(int(s) for s in cfg.token_shape)
        self.input_size = int(cfg.input_size)
        self.identity = f"demo:{file_digest([folder / CONFIG_FILE, folder / WEIGHTS_FILE])}"

    def embed(self, images: np.ndarray, *, tokens: bool = False, batch_size: int = 64) -> np.ndarray:
        """Embed uint8 images ``(N, H, W, 3)``: float32 ``(N, 128)``, or ``(N, 16, 128)`` with ``tokens=True``."""
        images = check_images(images)
        n = images.shape[0]
        out = np.empty((n, *self.token_shape) if tokens else (n, self.dim), np.float32)
        with torch.inference_mode():
            for sl in batches(n, batch_size):
                pooled, tok = self.net(normalise(images[sl], self.input_size, self.device))
                out[sl] = (tok if tokens else pooled).float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"DemoImageEmbedder(dim={self.dim}, token_shape={self.token_shape})"
