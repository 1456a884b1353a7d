"""The stages of a torch run (``pretrain`` for the masked brain model, then ``train``) and each epoch's data order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import ConfigError
from engine.train.config import TrainConfig
from engine.train.dataset import PreparedData


@dataclass(frozen=True)
class Stage:
    """A phase of training with its own optimizer: ``pretrain`` (MBM, unpaired) or ``train`` (supervised)."""

    name: str
    epochs: int
    batch_size: int
    n_rows: int
    optim: object

    @property
    def n_batches(self) -> int:
        return self.n_rows // self.batch_size

    @property
    def steps(self) -> int:
        return self.epochs * self.n_batches


def epoch_order(seed: int, stage: int, epoch: int, n: int) -> np.ndarray:
    """The data order of one epoch: a permutation from a generator seeded by (seed, stage, epoch) only."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(stage) * 10_007 + int(epoch))
    return torch.randperm(n, generator=g).numpy()


def plan_stages(cfg: TrainConfig, data: PreparedData, world_size: int = 1) -> list[Stage]:
    """The stages of a torch run (none for ridge), their batch sizes checked against the training trials."""
    if cfg.model.kind == "ridge":
        return []
    stages = []
    n_train = data.train_betas.shape[0]
    if cfg.model.kind == "mbm" and cfg.pretrain.epochs > 0:
        n_pre = n_train + (data.test_betas.shape[0] if cfg.data.pretrain_on_test else 0)
        stages.append(Stage("pretrain", cfg.pretrain.epochs, cfg.pretrain.batch_size, n_pre, cfg.pretrain.optim))
    stages.append(Stage("train", cfg.epochs, cfg.batch_size, n_train, cfg.optim))
    for s in stages:
        if s.n_batches < 1:
            key = "pretrain.batch_size" if s.name == "pretrain" else "batch_size"
            raise ConfigError(f"TrainConfig.{key}: expected at most the number of training trials ({s.n_rows}), "
                              f"found {s.batch_size}")
        if s.batch_size < 2 * world_size and s.name == "train":
            raise ConfigError(f"TrainConfig.batch_size: expected >= 2 per process ({world_size} "
                              f"processes), found {s.batch_size}")
    return stages
