"""``BrainEncoder``: the contract every torch brain encoder (MLP, masked brain model, Mixture-of-Experts) follows.

An encoder maps one subject's single-trial betas ``(batch, n_voxels)`` to a target image embedding
``(batch, *target_shape)`` (a pooled vector ``(D,)`` or tokens ``(T, D)``), plus a retrieval projection for the
contrastive losses. Subjects differ in voxel count, so each subject owns a small input module; everything after it is
shared. The trainer passes the subject's name with every batch (one subject per call).

A saved encoder is a folder::

    config.json        {"class": "MLPEncoder", "config": {...}, "subjects": [["subj01", 15724]],
                        "target_shape": [1280], "schema": 1}
    model.safetensors  the state dict

``engine.models.registry.load_encoder_folder(folder)`` rebuilds the right class from ``config.json`` (``MLPEncoder.load``
rebuilds that class) and never unpickles anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import torch
from torch import nn

from engine.errors import CheckpointError, ConfigError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.models.config import CONFIG_FILE, ModelConfig
from engine.models.construction import MODEL_BUILD_LOCK

SCHEMA_VERSION = 1
DEFAULT_SUBJECT = "default"
WEIGHTS_FILE = "model.safetensors"
TRAIN_MODES = ("all", "router_only", "input_only")
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)


# --------------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderOutput:
    """What every encoder's ``forward`` returns.

    Attributes
    ----------
    embedding : Tensor, shape (batch, *target_shape)
        Predicted target embedding (pooled ``(batch, D)`` or tokens ``(batch, T, D)``).
    retrieval : Tensor, shape (batch, proj_dim) or None
        Retrieval projection, flattened (``proj_dim = prod(target_shape)``), for the contrastive losses; ``None``
        when the config turns the projector off.
    aux_losses : dict[str, Tensor]
        Scalar losses the model adds (``"load_balance"`` for the MoE); the trainer weights them (``LossConfig``).
    extras : dict
        Model-specific outputs: ``"blurry"`` (batch, C, H, W) for the MLP's low-level head; ``"levels"``
        (n_levels, batch, *target_shape) for the MoE's per-level stacks.
    caption : Tensor, shape (batch, caption_dim) or None
        The caption head's predicted caption embedding (encoders built with ``caption_dim``), else ``None``.
    """

    embedding: torch.Tensor
    retrieval: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    caption: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------------------------------
# Shared building blocks
# --------------------------------------------------------------------------------------------------------------------


class CaptionHead(nn.Module):
    """Second target head: pooled encoder features → caption embedding, LayerNorm → Linear → GELU → Linear.

    The hidden width is the caption dimension (MoRE-Brain: 1280).
    """

    def __init__(self, in_dim: int, caption_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, caption_dim), nn.GELU(),
                                 nn.Linear(caption_dim, caption_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RetrievalProjector(nn.Module):
    """MindEyeV2's projector, applied to the last axis: (LayerNorm → GELU → Linear) × 3, width ``hidden``."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, hidden),
            nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResidualBlock(nn.Module):
    """MindEyeV2 backbone block: x + Linear(Dropout(GELU(Linear(LayerNorm(x)))))."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


# --------------------------------------------------------------------------------------------------------------------
# Base encoder
# --------------------------------------------------------------------------------------------------------------------


def subject_key(name: str) -> str:
    """A ``ModuleDict``-safe key for a subject name ('.' is not allowed in parameter names)."""
    return re.sub(r"[^0-9A-Za-z_\-]", "_", str(name)) or "_"


class BrainEncoder(nn.Module):
    """Base class of the torch brain encoders.

    Parameters
    ----------
    config : ModelConfig
        The subclass's frozen config (``self.config``).
    n_voxels : dict[str, int] or int
        Voxel count per subject name, in order; an int means one subject named ``"default"``.
    target_shape : tuple of int
        Shape of one target embedding: ``(D,)`` pooled or ``(T, D)`` tokens.

    Notes
    -----
    Subclasses implement ``_build_subject(n_voxels) -> nn.Module`` (stored in ``self.subject_layers``),
    ``forward``, and ``_router_parameters()`` where routers exist. Encoders that can predict captions set
    ``caption_features`` (the width of the pooled features their ``forward`` passes to ``self.caption(...)``);
    ``add_caption_head(dim)`` then adds the head, stored as ``caption_head`` and in ``spec()["caption_dim"]``.
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    kind: ClassVar[str] = ""

    def __init__(self, config: ModelConfig, *, n_voxels: dict[str, int] | int, target_shape: Iterable[int]) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = self.config_class.from_dict(config)
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__}: expected a {self.config_class.__name__}, found "
                              f"{type(config).__name__}")
        self.config = config
        self.target_shape = tuple(int(s) for s in target_shape)
        if len(self.target_shape) not in (1, 2) or any(s <= 0 for s in self.target_shape):
            raise ConfigError(f"{type(self).__name__}: target_shape: expected (D,) or (T, D) with positive sizes, "
                              f"found {self.target_shape}")
        subjects = {DEFAULT_SUBJECT: int(n_voxels)} if isinstance(n_voxels, int) else dict(n_voxels)
        if not subjects:
            raise ConfigError(f"{type(self).__name__}: n_voxels: expected at least one subject, found none")
        self.subjects: dict[str, int] = {}
        self.subject_layers = nn.ModuleDict()
        self.caption_head: CaptionHead | None = None
        self.caption_dim: int | None = None

        self._pending_subjects = subjects

    def _init_subjects(self) -> None:
        """Called by subclasses at the end of ``__init__``, once shared modules exist."""
        for name, n in self._pending_subjects.items():
            self.add_subject(name, n)
        del self._pending_subjects

    # ---- subjects ---------------------------------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        """Number of values in one target embedding, ``prod(target_shape)``."""
        n = 1
        for s in self.target_shape:
            n *= s
        return n

    def add_subject(self, name: str, n_voxels: int) -> None:
        """Add a freshly initialised input module for a new subject (for fine-tuning on it)."""
        name = str(name)
        if isinstance(n_voxels, bool) or int(n_voxels) <= 0:
            raise ConfigError(f"{type(self).__name__}: subject '{name}': expected a positive voxel count, "
                              f"found {n_voxels!r}")
        if name in self.subjects:
            raise ConfigError(f"{type(self).__name__}: subject '{name}' already exists")
        key = subject_key(name)
        if key in self.subject_layers:
            raise ConfigError(f"{type(self).__name__}: subject name '{name}' clashes with another subject's key '{key}'")
        with MODEL_BUILD_LOCK:  # see engine/models/construction.py
            module = self._build_subject(int(n_voxels))
        ref = next(self.parameters(), None)
        if ref is not None:
            module.to(device=ref.device, dtype=ref.dtype)
        self.subject_layers[key] = module
        self.subjects[name] = int(n_voxels)

    def _build_subject(self, n_voxels: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- caption head (second target) -------------------------------------------------------------------------------

    @property
    def caption_features(self) -> int:
        """Width of the pooled features the caption head reads; 0 when the encoder has none."""
        return 0

    def add_caption_head(self, caption_dim: int) -> None:
        """Add a freshly initialised caption head predicting ``(batch, caption_dim)`` caption embeddings."""
        if isinstance(caption_dim, bool) or int(caption_dim) <= 0:
            raise ConfigError(f"{type(self).__name__}: caption_dim: expected a positive integer, found "
                              f"{caption_dim!r}")
        if self.caption_features <= 0:
            raise ConfigError(f"{type(self).__name__}: this encoder has no caption head")
        if self.caption_head is not None:
            raise ConfigError(f"{type(self).__name__}: the encoder already has a caption head "
                              f"(caption_dim {self.caption_dim})")
        with MODEL_BUILD_LOCK:  # see engine/models/construction.py
            head = CaptionHead(self.caption_features, int(caption_dim))
        ref = next(self.parameters(), None)
        if ref is not None:
            head.to(device=ref.device, dtype=ref.dtype)
        self.caption_head = head
        self.caption_dim = int(caption_dim)

    def caption(self, features: torch.Tensor) -> torch.Tensor | None:
        """The caption head on pooled ``features`` (batch, caption_features); ``None`` without a head."""
        return None if self.caption_head is None else self.caption_head(features)

    def resolve_subject(self, subject: str | None) -> str:
        """The subject a call is for: ``None`` is allowed only when the encoder has one subject."""
        if subject is None:
            if len(self.subjects) == 1:
                return next(iter(self.subjects))
            raise ConfigError(f"{type(self).__name__}: this encoder has several subjects {list(self.subjects)}; "
                              f"pass subject=")
        if subject not in self.subjects:
            raise ConfigError(f"{type(self).__name__}: unknown subject '{subject}'; expected one of "
                              f"{list(self.subjects)}")
        return subject

    def subject_layer(self, subject: str | None) -> nn.Module:
        return self.subject_layers[subject_key(self.resolve_subject(subject))]

    def _check_betas(self, betas: torch.Tensor, subject: str | None) -> tuple[torch.Tensor, str]:
        name = self.resolve_subject(subject)
        if betas.ndim != 2 or betas.shape[1] != self.subjects[name]:
            raise ConfigError(f"{type(self).__name__}: betas for subject '{name}': expected shape "
                              f"(batch, {self.subjects[name]}), found {tuple(betas.shape)}")
        ref = next(self.parameters())
        if betas.dtype != ref.dtype or betas.device != ref.device:
            betas = betas.to(device=ref.device, dtype=ref.dtype)
        return betas, name

    # ---- forward ----------------------------------------------------------------------------------------------------

    def forward(self, betas: torch.Tensor, subject: str | None = None) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError

    def init_output_bias(self, mean_target) -> bool:
        """Start the embedding head's bias at the mean training target (``(*target_shape)`` array), so training
        begins from the targets' common pattern instead of spending its first steps on it (embeddings of one model
        share a large mean: for CLIP-like targets most of a vector's norm). Works for a ``head`` Linear whose output
        is the flattened embedding or one token (then the token-mean is used); returns whether it applied."""
        head = getattr(self, "head", None)
        if not isinstance(head, nn.Linear) or head.bias is None:
            return False
        m = torch.as_tensor(np.asarray(mean_target, dtype=np.float32)).reshape(-1, self.target_shape[-1])
        if head.bias.numel() == m.numel():
            value = m.reshape(-1)
        elif head.bias.numel() == m.shape[1]:
            value = m.mean(dim=0)
        else:
            return False
        with torch.no_grad():
            head.bias.copy_(value.to(head.bias))
        return True

    # ---- which parameters train -------------------------------------------------------------------------------------

    def _router_parameters(self) -> dict[str, nn.Parameter]:
        """Names → parameters of the routers (empty for encoders without routing)."""
        return {}

    def trainable_parameters(self, mode: str = "all", subject: str | None = None) -> dict[str, nn.Parameter]:
        """Names → parameters that train in ``mode``.

        Parameters
        ----------
        mode : {"all", "router_only", "input_only"}
            ``"all"``: every parameter. ``"input_only"``: the subject's input module. ``"router_only"``: the
            subject's input module and every router (MoE only; experts and projectors stay frozen).
        subject : str, optional
            For ``input_only`` / ``router_only``: the subject whose input module trains; default the subject added
            last (the new one after ``add_subject``).
        """
        if mode not in TRAIN_MODES:
            raise ConfigError(f"{type(self).__name__}: train mode: expected one of {list(TRAIN_MODES)}, "
                              f"found {mode!r}")
        named = dict(self.named_parameters())
        if mode == "all":
            return named
        name = subject if subject is not None else list(self.subjects)[-1]
        name = self.resolve_subject(name)
        prefix = f"subject_layers.{subject_key(name)}."
        chosen = {k: p for k, p in named.items() if k.startswith(prefix)}
        if mode == "router_only":
            routers = self._router_parameters()
            if not routers:
                raise ConfigError(f"{type(self).__name__}: train mode 'router_only' needs an encoder with routers "
                                  f"(kind 'moe'); use 'input_only'")
            ids = {id(p) for p in routers.values()}
            chosen.update({k: p for k, p in named.items() if id(p) in ids})
        return chosen

    def set_trainable(self, mode: str = "all", subject: str | None = None) -> list[str]:
        """Set ``requires_grad`` so that exactly ``trainable_parameters(mode, subject)`` train; return their names."""
        chosen = self.trainable_parameters(mode, subject)
        ids = {id(p) for p in chosen.values()}
        for p in self.parameters():
            p.requires_grad_(id(p) in ids)
        return sorted(chosen)

    def param_groups(self, mode: str = "all", subject: str | None = None, *,
                     weight_decay: float = 0.0, router_lr_scale: float = 1.0) -> list[dict]:
        """Optimizer parameter groups for ``mode``; freezes every other parameter (``requires_grad=False``).

        Returns up to three groups, ``{"name": "decay", "params": [...], "weight_decay": weight_decay}``,
        ``{"name": "no_decay", ..., "weight_decay": 0.0}`` (biases, norms, 1-D parameters, learned tokens), as in
        MindEyeV2, and for encoders with routers ``{"name": "router", ..., "weight_decay": 0.0, "lr_scale":
        router_lr_scale}``: routers learn faster when asked (a router's logits are small and its gradients weak, so
        at the experts' rate the routing barely leaves its initial, uniform state) and are not decayed towards that
        uniform state. Pass the list straight to ``torch.optim.AdamW``; a trainer multiplies each group's learning
        rate by its ``lr_scale`` (default 1).
        """
        self.set_trainable(mode, subject)
        norm_ids = {id(p) for m in self.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters()}
        router_ids = {id(p) for p in self._router_parameters().values()}
        decay, no_decay, router = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if id(p) in router_ids:
                router.append(p)
                continue
            exempt = p.ndim < 2 or id(p) in norm_ids or name.endswith("_token")
            (no_decay if exempt else decay).append(p)
        groups = []
        if decay:
            groups.append({"name": "decay", "params": decay, "weight_decay": float(weight_decay)})
        if no_decay:
            groups.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0})
        if router:
            groups.append({"name": "router", "params": router, "weight_decay": 0.0,
                           "lr_scale": float(router_lr_scale)})
        return groups

    # ---- persistence ------------------------------------------------------------------------------------------------

    def spec(self) -> dict:
        """What rebuilds this encoder without weights (the content of ``config.json``)."""
        spec = {"class": type(self).__name__, "kind": self.kind, "config": self.config.to_dict(),
                "subjects": [[k, v] for k, v in self.subjects.items()], "target_shape": list(self.target_shape),
                "schema": SCHEMA_VERSION}
        if self.caption_dim is not None:
            spec["caption_dim"] = self.caption_dim  # absent in encoders without a caption head (and older ones)
        return spec

    @classmethod
    def from_spec(cls, spec: dict, *, source: str = "spec") -> "BrainEncoder":
        """Build an untrained ``cls`` from ``spec()`` output.

        ``engine.models.registry.encoder_from_spec`` builds whichever kind the spec names.
        """
        cls_name, config, subjects, target_shape = parse_spec(spec, source=source)
        if cls is BrainEncoder:
            raise TypeError("BrainEncoder.from_spec builds one kind; engine.models.registry.encoder_from_spec builds "
                            "the kind a spec names")
        if cls_name != cls.__name__:
            raise CheckpointError(f"{source}: key 'class': expected {cls.__name__}, found {cls_name}")
        with MODEL_BUILD_LOCK:  # never while another thread runs a low-memory from_pretrained
            model = cls(cls.config_class.from_dict(config), n_voxels=subjects, target_shape=target_shape)
            if spec.get("caption_dim") is not None:
                model.add_caption_head(spec["caption_dim"])
        return model

    def save(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into the folder ``path``, atomically.

        An existing folder is replaced only if it is itself an encoder folder (has ``config.json``).
        """
        from engine.atomic import atomic_dir, atomic_save_safetensors, atomic_write_json

        path = Path(path)
        if path.exists() and overwrite and not (path / CONFIG_FILE).is_file():
            raise CheckpointError(f"{path}: exists and is not an encoder folder (no {CONFIG_FILE}); "
                                  f"refusing to replace it")
        with atomic_dir(path, overwrite=overwrite) as tmp:
            atomic_write_json(tmp / CONFIG_FILE, self.spec())
            atomic_save_safetensors(tmp / WEIGHTS_FILE, self.state_dict(),
                                    metadata={"class": type(self).__name__, "schema": str(SCHEMA_VERSION)})
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> "BrainEncoder":
        """Rebuild a ``cls`` saved with ``save``; ``engine.models.registry.load_encoder_folder`` loads any kind."""
        from safetensors.torch import load_file

        path = Path(path)
        spec = read_spec(path)
        cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        try:
            model = cls.from_spec(spec, source=str(cfg_path))
        except ConfigError as e:
            raise CheckpointError(f"{cfg_path}: {e}") from None
        try:
            state = load_file(str(w_path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{w_path}: cannot read safetensors ({e})") from None
        model.load_state_dict_checked(state, source=str(w_path))
        return model.to(device)

    def load_state_dict_checked(self, state: dict[str, torch.Tensor], *, source: str = "state dict") -> None:
        """``load_state_dict`` that names missing / unexpected / mis-shaped keys in a ``CheckpointError``."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [f"{k}: expected {tuple(own[k].shape)}, found {tuple(state[k].shape)}"
                  for k in own if k in state and own[k].shape != state[k].shape]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
            if shapes:
                parts.append("; ".join(shapes[:5]))
            raise CheckpointError(f"{source}: weights do not match {type(self).__name__}: " + "; ".join(parts))
        empty = [k for k, v in own.items() if v.is_meta]
        if empty:  # loading into meta tensors is a silent no-op: refuse instead of returning an empty model
            raise CheckpointError(f"{source}: {type(self).__name__} was built without storage (meta device) for "
                                  f"{empty[:3]}; was it constructed outside engine.models.construction's lock?")
        self.load_state_dict(state, strict=True)


def read_spec(path: str | Path) -> dict:
    """The ``config.json`` of the encoder folder ``path`` (``CheckpointError`` if a part is missing or unreadable)."""
    path = Path(path)
    cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{path}: not an encoder folder: missing {p.name}")
    try:
        return read_object(cfg_path)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None


def parse_spec(spec: dict, *, source: str = "spec") -> tuple[str, dict, dict[str, int], tuple]:
    """``(class name, config, subjects, target_shape)`` of a ``spec()``, its keys and schema checked."""
    try:
        schema = spec["schema"]
        cls_name = spec["class"]
        config = spec["config"]
        subjects = {str(k): int(v) for k, v in spec["subjects"]}
        target_shape = tuple(spec["target_shape"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: not an encoder config ({type(e).__name__}: {e}); expected keys "
                              f"class, config, subjects, target_shape, schema") from None
    if schema != SCHEMA_VERSION:
        raise CheckpointError(f"{source}: key 'schema': expected {SCHEMA_VERSION}, found {schema!r}")
    return cls_name, config, subjects, target_shape
