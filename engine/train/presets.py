"""Named starting configs: the reference methods sized to the data, quick demo recipes, and tiny ones for tests.

>>> list_presets()
['mindeye', 'mindvis-mbm', 'moe-brain', 'demo-ridge', 'demo-mlp', 'demo-moe', 'demo-mbm', 'tiny-ridge', ...]
>>> cfg = get_preset("mindeye", subject)          # a TrainConfig; edit with cfg.with_overrides({...})

Reference presets follow ``docs``' methods summary (MindEyeV2 ``src/Train.ipynb``, MinD-Vis ``code/config.py``,
MoRE-Brain ``Train.py``). Their widths are the published ones for an NSD-sized subject (15,724 voxels, subj01) and
shrink with the voxel count (``scale = n_voxels / 15,724``, clipped to [1/16, 1]): MLP/MoE width ∝ scale, transformer
width ∝ √scale, depth ∝ scale. Batch sizes are capped at the number of training trials.
"""

from __future__ import annotations

import math

import numpy as np

from engine.errors import ConfigError
from engine.train.config import TrainConfig

REFERENCE_VOXELS = 15724  # NSD subj01 nsdgeneral
DEMO_EARLY, DEMO_CATEGORY = ("V1", "V2", "V3"), ("LO", "VOT")  # the demo subject's ROI families
# Demo models are small (a few million weights, batch 64): one torch thread is as fast as two on an idle machine and
# up to 10× faster on a busy one (thread oversubscription), so the demo presets pin it.
DEMO_THREADS = 1

DESCRIPTIONS = {
    "mindeye": "MindEyeV2: per-subject linear layer → 4 residual blocks (hidden 4096 at NSD size) → token head + "
               "retrieval projector; BiMixCo for the first third, then SoftCLIP; OneCycle 3e-4; batch 24, 150 epochs",
    "mindvis-mbm": "MinD-Vis SC-MBM: masked autoencoder over 16-voxel patches (dim 1024, depth 24 at NSD size), "
                   "pre-trained on the training trials' fMRI (mask 0.75, 500 epochs; the test trials' too only with "
                   "--set data.pretrain_on_test=true), then fine-tuned as the decoder's encoder",
    "moe-brain": "MoRE-Brain: per-subject linear layer → hierarchical experts 2/4/8/16, expert-choice routing, "
                 "load balancing ×1; pooled targets; OneCycle 3e-4, batch 24, 50 epochs",
    "demo-ridge": "Demo: cross-validated ridge from voxels to the demo embedding, decoded spread matched to the "
                  "targets' on the training trials (closed form, under a minute)",
    "demo-mlp": "Demo: small MindEye-style MLP on the demo subject (under a minute on one CPU core)",
    "demo-moe": "Demo: small Mixture-of-Experts (2 then 4 experts) over ROI-grouped input units, routing early-visual "
                "and category ROIs to different experts (about a minute on one CPU core)",
    "demo-mbm": "Demo: small masked brain model over 64-voxel patches, short pre-training then fine-tuning (about "
                "2 minutes on one CPU core)",
    "pixel-ridge": "Small images: cross-validated ridge from voxels straight to the stimulus pixels at their own "
                   "resolution, one alpha per pixel (the classic decoder of digit/letter/pattern datasets; closed "
                   "form, seconds). --set data.pixel_basis=pca (with data.pca_components=K) decodes K principal "
                   "components of the training and prior images; =multiscale, Miyawaki-style local patch decoders",
    "tiny-ridge": "Tests: ridge on pixel targets",
    "tiny-mlp": "Tests: a 32-unit MLP on pixel targets, 2 epochs",
    "tiny-moe": "Tests: a 32-unit MoE (2, 4 experts) on pixel targets, 2 epochs",
    "tiny-mbm": "Tests: a 1-block masked brain model, 1 pre-training + 2 fine-tuning epochs",
}


def list_presets() -> list[str]:
    """Names of every preset, reference methods first."""
    return list(DESCRIPTIONS)


def describe_preset(name: str) -> str:
    _check_name(name)
    return DESCRIPTIONS[name]


def _check_name(name: str) -> None:
    if name not in DESCRIPTIONS:
        raise ConfigError(f"preset: expected one of {list_presets()}, found {name!r}")


def _sizes(subject) -> tuple[int, int]:
    """(n_voxels, n_train_trials) of a subject; NSD-like defaults without one."""
    if subject is None:
        return REFERENCE_VOXELS, 24980
    n_train = len(subject.split_indices("train"))
    return int(subject.n_voxels), int(n_train)


def _scale(n_voxels: int) -> float:
    return min(1.0, max(1.0 / 16, n_voxels / REFERENCE_VOXELS))


def _round(x: float, multiple: int, lo: int) -> int:
    return max(lo, int(round(x / multiple)) * multiple)


def _batch(batch: int, n_train: int) -> int:
    return max(2, min(batch, n_train))


def get_preset(name: str, subject=None, *, validate: bool = True) -> TrainConfig:
    """The ``TrainConfig`` of a preset, sized to ``subject`` (a ``Subject``; None: NSD-sized defaults).

    ``validate=False`` skips the checks against the model classes, which import torch: for showing a preset in a
    form without blocking the GUI thread (the training job validates what it runs).
    """
    _check_name(name)
    n_vox, n_train = _sizes(subject)
    s = _scale(n_vox)
    d = _PRESETS[name](s, n_vox, n_train)
    d.setdefault("name", name)
    cfg = TrainConfig.from_dict(d)
    return cfg.validate() if validate else cfg


def _mindeye(s, n_vox, n_train) -> dict:
    epochs = 150
    return {
        "model": {"kind": "mlp", "params": {"hidden": _round(4096 * s, 256, 256), "n_blocks": 4, "dropout": 0.15}},
        "data": {"embedder": "demo", "target": "tokens"},
        "loss": {"contrastive": 1.0, "contrastive_kind": "mindeye", "mixco_fraction": 0.33, "mse": 1.0},
        "optim": {"lr": 3e-4, "weight_decay": 1e-2, "schedule": "onecycle", "warmup": 2 / epochs,
                  "final_div_factor": 1000.0, "grad_clip": 1.0},
        "epochs": epochs, "batch_size": _batch(24, n_train), "precision": "bf16", "log_every": 50,
    }


def _mindvis(s, n_vox, n_train) -> dict:
    dim = _round(1024 * math.sqrt(s), 64, 128)
    return {
        "model": {"kind": "mbm", "params": {"patch_size": 16, "dim": dim, "depth": max(4, round(24 * s)),
                                            "heads": 16 if dim % 16 == 0 else 8, "mlp_ratio": 1.0,
                                            "decoder_dim": dim // 2, "decoder_depth": max(2, round(8 * s)),
                                            "decoder_heads": 16 if (dim // 2) % 16 == 0 else 8, "mask_ratio": 0.75}},
        "data": {"embedder": "demo", "target": "tokens"},  # pretrain_on_test (MinD-Vis stage A2) is opt-in
        "pretrain": {"epochs": 500, "batch_size": _batch(100, n_train),
                     "optim": {"lr": 2.5e-4, "weight_decay": 0.05, "betas": [0.9, 0.95], "schedule": "cosine",
                               "warmup": 40 / 500, "grad_clip": 0.8}},
        "loss": {"contrastive": 1.0, "contrastive_kind": "softclip", "mse": 1.0},
        "optim": {"lr": 5.3e-5, "weight_decay": 0.05, "betas": [0.9, 0.999], "schedule": "cosine", "warmup": 0.04,
                  "grad_clip": 0.5},
        "epochs": 50, "batch_size": _batch(16, n_train), "precision": "bf16", "log_every": 50,
    }


def _moe_brain(s, n_vox, n_train) -> dict:
    epochs = 50
    return {
        "model": {"kind": "moe", "params": {"hidden": _round(4096 * s, 256, 256), "topology": "hierarchical",
                                            "n_experts": [2, 4, 8, 16], "routing": "expert_choice",
                                            "capacity_factor": 1.0, "router_noise": 1e-3,
                                            "expert_width": _round(2048 * s, 128, 128), "n_blocks": 4,
                                            "dropout": 0.15, "balance": "mse"}},
        "data": {"embedder": "demo", "target": "pooled"},
        "loss": {"contrastive": 1.0, "contrastive_kind": "mindeye", "mixco_fraction": 0.33, "mse": 1.0,
                 "load_balance": 1.0},
        "optim": {"lr": 3e-4, "weight_decay": 1e-2, "schedule": "onecycle", "warmup": 2 / epochs, "grad_clip": 1.0},
        "epochs": epochs, "batch_size": _batch(24, n_train), "precision": "bf16", "log_every": 50,
    }


def _demo_ridge(s, n_vox, n_train) -> dict:
    return {"model": {"kind": "ridge", "params": {"alphas": [10.0 ** k for k in range(0, 7)], "cv": 5,
                                                  "rescale": True}},
            "data": {"embedder": "demo", "target": "pooled"}, "epochs": 1, "batch_size": 2}


def _pixel_ridge(s, n_vox, n_train) -> dict:
    # No output rescaling: the ridge's own (shrunken) predictions are the least-squares images PixCorr rewards.
    return {"model": {"kind": "ridge", "params": {"alphas": [float(10.0 ** k) for k in np.arange(-1.0, 7.5, 0.5)],
                                                  "cv": 5, "rescale": False}},
            "data": {"embedder": "stimulus-pixels", "target": "pooled"}, "epochs": 1, "batch_size": 2}


def _demo_mlp(s, n_vox, n_train) -> dict:
    epochs = 20
    return {
        "model": {"kind": "mlp", "params": {"hidden": 512, "n_blocks": 2, "dropout": 0.15}},
        "data": {"embedder": "demo", "target": "pooled"},
        "loss": {"contrastive": 1.0, "contrastive_kind": "mindeye", "mixco_fraction": 0.33, "mse": 1.0},
        "optim": {"lr": 1e-3, "weight_decay": 1e-2, "schedule": "onecycle", "warmup": 2 / epochs},
        "epochs": epochs, "batch_size": _batch(64, n_train), "eval_every": 5, "log_every": 20,
        "num_threads": DEMO_THREADS,
    }


def _demo_moe(s, n_vox, n_train) -> dict:
    epochs = 20
    return {
        "model": {"kind": "moe", "params": {"hidden": 256, "topology": "hierarchical", "n_experts": [2, 4],
                                            "routing": "expert_choice", "expert_width": 256, "n_blocks": 1,
                                            "dropout": 0.1, "router_init": 0.05,
                                            # ROI-aware input units; early visual starts on expert 0, category
                                            # ROIs on expert 1 (without the prior the routing stays mixed).
                                            "roi_groups": [list(DEMO_EARLY), ["hV4"], list(DEMO_CATEGORY)],
                                            "roi_group_prior": 2.0}},
        "data": {"embedder": "demo", "target": "pooled"},
        "loss": {"contrastive": 1.0, "contrastive_kind": "mindeye", "mixco_fraction": 0.33, "mse": 1.0,
                 "load_balance": 0.05},
        "optim": {"lr": 1e-3, "weight_decay": 1e-2, "schedule": "onecycle", "warmup": 2 / epochs,
                  "router_lr_scale": 10.0},
        "epochs": epochs, "batch_size": _batch(64, n_train), "eval_every": 5, "log_every": 20,
        "num_threads": DEMO_THREADS,
    }


def _demo_mbm(s, n_vox, n_train) -> dict:
    # Patches of 64 voxels (about 60 tokens for the demo subject): attention over ~240 16-voxel patches made each
    # step several times slower, so too few fine-tuning steps fitted in the demo's time budget to learn (2-way 0.51).
    return {
        "model": {"kind": "mbm", "params": {"patch_size": 64, "dim": 128, "depth": 2, "heads": 4,
                                            "decoder_dim": 64, "decoder_depth": 1, "decoder_heads": 4,
                                            "mask_ratio": 0.75}},
        "data": {"embedder": "demo", "target": "pooled"},
        "pretrain": {"epochs": 10, "batch_size": _batch(64, n_train),
                     "optim": {"lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.95], "schedule": "cosine",
                               "warmup": 0.1, "grad_clip": 0.8}},
        "loss": {"contrastive": 1.0, "contrastive_kind": "softclip", "mse": 1.0},
        "optim": {"lr": 1e-3, "weight_decay": 0.01, "schedule": "onecycle", "warmup": 0.1},
        "epochs": 20, "batch_size": _batch(64, n_train), "eval_every": 5, "log_every": 20,
        "num_threads": DEMO_THREADS,
    }


_TINY = {
    "ridge": {"alphas": [1.0, 10.0, 100.0], "cv": 3},
    "mlp": {"hidden": 32, "n_blocks": 1, "dropout": 0.1},
    "moe": {"hidden": 32, "n_experts": [2, 4], "n_blocks": 1},
    "mbm": {"dim": 32, "depth": 1, "heads": 2, "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2,
            "patch_size": 8},
}


def _tiny(kind: str):
    def make(s, n_vox, n_train) -> dict:
        return {"model": {"kind": kind, "params": dict(_TINY[kind])}, "data": {"embedder": "pixels"},
                "epochs": 2, "batch_size": _batch(16, n_train), "seed": 3, "log_every": 2,
                "pretrain": {"epochs": 1, "batch_size": _batch(16, n_train)}}
    return make


_PRESETS = {
    "mindeye": _mindeye, "mindvis-mbm": _mindvis, "moe-brain": _moe_brain,
    "demo-ridge": _demo_ridge, "pixel-ridge": _pixel_ridge, "demo-mlp": _demo_mlp, "demo-moe": _demo_moe, "demo-mbm": _demo_mbm,
    "tiny-ridge": _tiny("ridge"), "tiny-mlp": _tiny("mlp"), "tiny-moe": _tiny("moe"), "tiny-mbm": _tiny("mbm"),
}
