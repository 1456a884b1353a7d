"""What a finished run leaves: the final model folder (``RUN_DIR/model``) and, for a MoE, its routing summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.atomic import atomic_dir, atomic_write_json
from engine.train.config import TrainConfig
from engine.train.dataset import PreparedData
from engine.train.predict import CAPTION_RIDGE, NORMALIZATION
from engine.train.run import MODEL_INFO
from engine.train.run import Run

ROUTING_FILE = "routing.json"


def save_final_model(run: Run, config: TrainConfig, model, data: PreparedData, *, subject_key: str, step: int,
                     metrics: dict, caption_ridge=None) -> Path:
    """``RUN_DIR/model``, atomically: the encoder (or ridge / pixel decoder, caption ridge), the z-scoring statistics
    and ``model.json``."""
    target = run.model_dir
    info = {"kind": config.model.kind, "subject": subject_key, "n_voxels": int(data.n_voxels),
            "target_shape": list(data.target_shape), "embedder": config.data.embedder,
            "target": config.data.target, "repeat_mode": config.data.repeat_mode,
            "config_hash": config.config_hash(), "step": step, "metrics": metrics}
    if data.caption_targets is not None:
        info.update(caption_embedder=config.data.caption_embedder,
                    caption_dim=int(data.caption_targets.shape[1]))
    with atomic_dir(target, overwrite=True) as tmp:
        if config.model.kind == "ridge":
            if hasattr(model, "save_into"):  # a pixel decoder through a basis: ridge/ + pixel_basis/
                model.save_into(tmp)
                info["pixel_basis"] = model.info
            else:
                model.save(tmp / "ridge")
            if caption_ridge is not None:
                caption_ridge.save(tmp / CAPTION_RIDGE)
        else:
            model.cpu().save(tmp / "encoder")
        data.normalizer.save(tmp / NORMALIZATION)
        atomic_write_json(tmp / MODEL_INFO, info)
    return target


def write_routing_summary(run: Run, model, data: PreparedData, subject) -> str | None:
    """Expert × ROI tables of the trained MoE on the test trials, written to ``RUN_DIR/routing.json``; returns the
    line that names each ROI's dominant expert (None when there is nothing to route)."""
    from engine.models.routing import expert_roi_table, voxel_routing

    rois = {}
    idx = data.normalizer.voxel_index
    for name, mask in subject.rois.items():
        m = np.asarray(mask, bool)[idx]
        if m.any():
            rois[name] = m
    if not rois or data.test_betas.shape[0] == 0:
        return None
    model.cpu()
    levels = voxel_routing(model, subject.name, data.test_betas)
    tables = [expert_roi_table(v, rois) for v in levels]
    atomic_write_json(run.path / ROUTING_FILE, {
        "rois": list(rois), "levels": [{"n_experts": int(t.shape[0]),
                                        "table": np.where(np.isfinite(t), t, -1).tolist()} for t in tables],
        "note": "table[e][r]: share of ROI r's voxels' routing that goes to expert e (columns sum to 1)",
    })
    first = tables[0]
    top = {name: int(np.nanargmax(first[:, j])) for j, name in enumerate(rois)}
    return "MoE level 0, dominant expert per ROI: " + ", ".join(f"{k}→{v}" for k, v in top.items())
