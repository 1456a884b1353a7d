"""``ModelConfig``: the frozen constructor arguments of a brain encoder (``MLPConfig``, ``MBMConfig``, ``MoEConfig``)
and of the loss (``LossConfig``), written into the model folder's ``config.json``.

``from_dict(to_dict(c)) == c``; unknown keys and wrong types raise ``ConfigError`` naming the key
(``engine.config.Config``). Torch-free, so ``engine.train.config`` and the GUI can check parameters cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Config

CONFIG_FILE = "config.json"  # in an encoder folder: what rebuilds the encoder (``BrainEncoder.spec``), no weights


@dataclass(frozen=True)
class ModelConfig(Config):
    """Base of the frozen model configs. Subclasses list their fields with defaults and may override ``validate``
    to check values (``engine.config.check``, which names the key)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values; raise ``ConfigError`` naming the key. Subclasses extend."""
