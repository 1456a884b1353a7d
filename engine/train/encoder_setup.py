"""The torch encoder of a run: built new, from ``init_from`` or from a checkpoint; its caption head; its optimizer
parameter groups."""

from __future__ import annotations

import random

import numpy as np
import torch

from engine.errors import ConfigError
from engine.train.config import TrainConfig
from engine.train.dataset import PreparedData
from engine.train.stages import Stage


def build_model(cfg: TrainConfig, data: PreparedData, ckpt, subject, dist):
    """The run's torch encoder on ``dist.device``, seeded: from the checkpoint ``ckpt``, from ``cfg.init_from`` (this
    subject's input layer added when new) or new, with a caption head when the run has caption targets."""
    from engine.models.base import BrainEncoder
    from engine.models.registry import build_encoder, encoder_from_spec

    key = subject.name
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    if ckpt is not None:
        model = encoder_from_spec(ckpt.model_spec, source=str(ckpt.path))
        model.load_state_dict_checked(ckpt.model_state, source=str(ckpt.path))
    elif cfg.init_from:
        from engine.train.predict import load_encoder

        model = load_encoder(cfg.init_from)
        if not isinstance(model, BrainEncoder):
            raise ConfigError(f"TrainConfig.init_from: {cfg.init_from} holds a ridge model; expected a torch "
                              f"encoder run (kind mlp, mbm or moe)")
        if model.kind != cfg.model.kind:
            raise ConfigError(f"TrainConfig.init_from: {cfg.init_from} holds a '{model.kind}' encoder, but "
                              f"model.kind is '{cfg.model.kind}'")
        if tuple(model.target_shape) != data.target_shape:
            raise ConfigError(f"TrainConfig.init_from: {cfg.init_from} predicts targets of shape "
                              f"{tuple(model.target_shape)}, this run's targets are {data.target_shape}")
        if key not in model.subjects:
            model.add_subject(key, data.n_voxels)
        elif model.subjects[key] != data.n_voxels:
            raise ConfigError(f"TrainConfig.init_from: subject '{key}' has {model.subjects[key]} voxels "
                              f"in {cfg.init_from}, {data.n_voxels} here")
    else:
        model = build_encoder(cfg.model.kind, cfg.model_config(), n_voxels={key: data.n_voxels},
                              target_shape=data.target_shape)
        model.init_output_bias(data.targets[data.train_image].mean(axis=0))
    ensure_caption_head(model, data, cfg.train_mode)
    if hasattr(model, "set_voxel_groups"):
        # ROI-aware MoE input layers read each voxel's ROI group from the subject (a no-op without roi_groups).
        idx = data.normalizer.voxel_index
        model.set_voxel_groups(key, {k: np.asarray(m, bool)[idx] for k, m in subject.rois.items()})
    model = model.to(dist.device)
    dist.broadcast_model(model)
    return model

def ensure_caption_head(model, data: PreparedData, train_mode: str) -> None:
    """Give the encoder a caption head when the run has caption targets (new model or ``init_from``)."""
    if data.caption_targets is None:
        return
    dim = int(data.caption_targets.shape[1])
    if model.caption_head is None:
        if train_mode != "all":
            raise ConfigError(f"TrainConfig.train_mode: '{train_mode}' would leave a new caption "
                              f"head untrained; fine-tune with train_mode 'all' or set data.caption_embedder: null")
        model.add_caption_head(dim)
    elif model.caption_dim != dim:
        raise ConfigError(f"TrainConfig.data.caption_embedder: the encoder's caption head predicts "
                          f"{model.caption_dim} values, the caption embedder gives {dim}")

def param_groups(model, stage: Stage, train_mode: str, key: str) -> list[dict]:
    """The optimizer's parameter groups for ``stage`` (pre-training: the masked model's parameters only)."""
    wd = stage.optim.weight_decay
    if stage.name == "pretrain":
        chosen = model.pretrain_parameters()
        ids = {id(p) for p in chosen.values()}
        for p in model.parameters():
            p.requires_grad_(id(p) in ids)
        decay = [p for n, p in chosen.items() if p.ndim >= 2 and not n.endswith("_token")]
        no_decay = [p for n, p in chosen.items() if not (p.ndim >= 2 and not n.endswith("_token"))]
        groups = [{"name": "decay", "params": decay, "weight_decay": wd},
                  {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]
    return model.param_groups(train_mode, subject=key, weight_decay=wd,
                              router_lr_scale=stage.optim.router_lr_scale)
