"""Build a torch brain encoder by kind name ("mlp", "mbm", "moe") from a plain config dict.

>>> enc = build_encoder("moe", {"hidden": 64, "n_experts": [2, 4]}, n_voxels={"subj01": 500}, target_shape=(32,))
>>> out = enc(torch.randn(8, 500), subject="subj01")      # EncoderOutput; out.embedding is (8, 32)
"""

from __future__ import annotations

from typing import Iterable

from engine.errors import ConfigError
from engine.models.base import BrainEncoder
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
