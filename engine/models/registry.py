"""The encoder kinds ("mlp", "mbm", "moe"): build one by kind name from a plain config dict, or rebuild the kind a
saved spec or folder names.

>>> enc = build_encoder("moe", {"hidden": 64, "n_experts": [2, 4]}, n_voxels={"subj01": 500}, target_shape=(32,))
>>> out = enc(torch.randn(8, 500), subject="subj01")      # EncoderOutput; out.embedding is (8, 32)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from engine.errors import CheckpointError, ConfigError
from engine.models.base import BrainEncoder, parse_spec, read_spec
from engine.models.config import ModelConfig
from engine.models.mbm import MBMConfig, MBMEncoder
from engine.models.mlp import MLPConfig, MLPEncoder
from engine.models.moe import MoEConfig, MoEEncoder
from engine.models.construction import MODEL_BUILD_LOCK

#: kind name → encoder class
ENCODER_KINDS: dict[str, type[BrainEncoder]] = {"mlp": MLPEncoder, "mbm": MBMEncoder, "moe": MoEEncoder}
#: kind name → config class
CONFIG_CLASSES: dict[str, type[ModelConfig]] = {"mlp": MLPConfig, "mbm": MBMConfig, "moe": MoEConfig}
#: class name (as written in config.json) → encoder class
ENCODER_CLASSES: dict[str, type[BrainEncoder]] = {cls.__name__: cls for cls in ENCODER_KINDS.values()}


def config_for(kind: str, config: dict | ModelConfig | None = None) -> ModelConfig:
    """The typed config of ``kind`` from a dict (defaults for missing keys; ``ConfigError`` on unknown ones)."""
    if kind not in ENCODER_KINDS:
        raise ConfigError(f"encoder kind: expected one of {sorted(ENCODER_KINDS)}, found {kind!r}")
    cls = CONFIG_CLASSES[kind]
    if isinstance(config, cls):
        return config
    if isinstance(config, ModelConfig):
        raise ConfigError(f"encoder kind '{kind}': expected a {cls.__name__}, found {type(config).__name__}")
    return cls.from_dict(config or {})


def build_encoder(kind: str, config: dict | ModelConfig | None = None, *, n_voxels: dict[str, int] | int,
                  target_shape: Iterable[int]) -> BrainEncoder:
    """A freshly initialised encoder.

    Parameters
    ----------
    kind : {"mlp", "mbm", "moe"}
    config : dict or config dataclass
        Keys of ``MLPConfig`` / ``MBMConfig`` / ``MoEConfig``; missing keys take defaults.
    n_voxels : dict[str, int] or int
        Voxel count per subject name (an int: one subject named ``"default"``).
    target_shape : tuple of int
        ``(D,)`` for a pooled embedding or ``(T, D)`` for tokens.
    """
    cfg = config_for(kind, config)
    with MODEL_BUILD_LOCK:  # never while another thread runs a low-memory from_pretrained
        return ENCODER_KINDS[kind](cfg, n_voxels=n_voxels, target_shape=tuple(target_shape))


def encoder_from_spec(spec: dict, *, source: str = "spec") -> BrainEncoder:
    """An untrained encoder of the class a ``BrainEncoder.spec()`` names."""
    return _named_class(parse_spec(spec, source=source)[0], source).from_spec(spec, source=source)


def load_encoder_folder(path: str | Path, *, device: str | torch.device = "cpu") -> BrainEncoder:
    """The encoder saved in the folder ``path`` with ``BrainEncoder.save``, whichever kind it is."""
    source = str(Path(path) / "config.json")
    return _named_class(parse_spec(read_spec(path), source=source)[0], source).load(path, device=device)


def _named_class(cls_name: str, source: str) -> type[BrainEncoder]:
    if cls_name not in ENCODER_CLASSES:
        raise CheckpointError(f"{source}: key 'class': expected one of {sorted(ENCODER_CLASSES)}, "
                              f"found {cls_name!r}")
    return ENCODER_CLASSES[cls_name]
