"""Routing analysis of a trained Mixture-of-Experts encoder, in numpy, for the GUI's expert views.

The MoE routes the units of each subject's input layer, not voxels (as MoRE-Brain's code does). To show routing on the
brain, a unit's routing is attributed back to voxels through the input layer: voxel v's share for expert e is
Σ_u |W[u, v]| · R[u, e], normalised over experts, where W (n_units, n_voxels) is the input layer's weight and R the
unit's mean routing weight over the given trials. On deeper hierarchical levels, whose units are the parent experts'
hidden units, a unit's routing to a child is its routing to the parent times the child's share of the parent's routed
weight in that trial (an attribution, not an exact gradient path). ``voxel_routing(..., method="gradient")`` instead
measures which voxels each expert's output actually depends on (gradient × input, after MoRE-Brain's integrated-gradient
analysis); it costs one backward pass per expert.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError


def unit_routing(routing) -> list[np.ndarray]:
    """Per level, the routing of each input-layer unit to each expert, per trial.

    Parameters
    ----------
    routing : RoutingWeights
        From ``MoEEncoder.routing_weights``.

    Returns
    -------
    list of ndarray, each (n_trials, n_units, n_experts)
        ``n_units`` is the input layer's width on every level.
    """
    out: list[np.ndarray] = []
    for i, lv in enumerate(routing.levels):
        if lv.source == "input":
            out.append(lv.weights)
            continue
        prev = out[i - 1]
        mass = lv.weights.sum(axis=1)  # (n_trials, n_experts)
        parents = lv.parents
        sibling_mass = np.zeros((mass.shape[0], prev.shape[2]), dtype=np.float64)
        np.add.at(sibling_mass.T, parents, mass.T)
        share = mass / np.maximum(sibling_mass[:, parents], 1e-12)
        out.append((prev[:, :, parents] * share[:, None, :]).astype(np.float32))
    return out


def voxel_routing(model, subject_name: str, betas, *, method: str = "weights",
                  chunk_size: int = 128) -> list[np.ndarray]:
    """Routing of each voxel to each expert, per level, averaged over the given trials.

    ``method="weights"`` attributes each unit's routing to voxels through |input-layer weights| (fast, shows where
    routed units draw from). ``method="gradient"`` measures what each expert actually uses: |∂‖o_e‖² / ∂x_v · x_v|
    summed over trials, with o_e expert e's output (gradient × input, a one-step version of MoRE-Brain's integrated
    gradients; one backward pass per expert and chunk).

    Parameters
    ----------
    model : MoEEncoder
    subject_name : str
        A subject of ``model`` (its input layer maps voxels to units).
    betas : array, shape (n_trials, n_voxels)
        Trials to average over (e.g. the test set).
    method : {"weights", "gradient"}
    chunk_size : int
        Trials routed at once.

    Returns
    -------
    list of ndarray, each (n_voxels, n_experts)
        Rows sum to 1 (a voxel reaching no routed unit gets a uniform row).
    """
    if not hasattr(model, "routing_weights"):
        raise ConfigError(f"voxel routing needs a Mixture-of-Experts encoder, found {type(model).__name__}")
    betas = np.asarray(betas, dtype=np.float32)
    if betas.ndim != 2 or betas.shape[0] == 0:
        raise ConfigError(f"voxel routing: expected betas (n_trials, n_voxels) with n_trials > 0, found {betas.shape}")
    if method == "gradient":
        return [_normalise_rows(v).astype(np.float32) for v in _gradient_relevance(model, subject_name, betas,
                                                                                     chunk_size)]
    if method != "weights":
        raise ConfigError(f"voxel routing method: expected 'weights' or 'gradient', found {method!r}")
    layer = model.subject_layer(subject_name)
    # An ROI-grouped input layer's units read only their group's voxels: attribute through the masked weight.
    weight = (layer.effective_weight() if hasattr(layer, "effective_weight") else layer.weight)
    weight = weight.detach().cpu().numpy()  # (n_units, n_voxels)
    attribution = np.abs(weight).astype(np.float64)
    sums: list[np.ndarray] | None = None
    # Chunks of trials bound memory: deep levels hold (trials, units, experts) arrays.
    for start in range(0, betas.shape[0], chunk_size):
        per_level = unit_routing(model.routing_weights(betas[start:start + chunk_size], subject_name))
        chunk = [r.sum(axis=0, dtype=np.float64) for r in per_level]
        sums = chunk if sums is None else [a + b for a, b in zip(sums, chunk)]
    levels = []
    for total in sums:
        per_unit = total / betas.shape[0]  # (n_units, n_experts), mean over trials
        v = attribution.T @ per_unit  # (n_voxels, n_experts)
        levels.append(_normalise_rows(v).astype(np.float32))
    return levels


def _gradient_relevance(model, subject_name: str, betas: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    """Per level, (n_voxels, n_experts): Σ_trials |∂‖o_e‖² / ∂x · x| in eval mode."""
    import torch

    ref = next(model.parameters())
    was_training = model.training
    model.eval()
    sums: list[np.ndarray] | None = None
    try:
        for start in range(0, betas.shape[0], chunk_size):
            x = torch.as_tensor(betas[start:start + chunk_size], device=ref.device, dtype=ref.dtype)
            x.requires_grad_(True)
            with torch.enable_grad():
                outs = model.expert_outputs(x, subject_name)
                chunk = []
                for out in outs:
                    per_expert = []
                    for e in range(out.shape[1]):
                        score = out[:, e].float().pow(2).sum()
                        (grad,) = torch.autograd.grad(score, x, retain_graph=True, allow_unused=True)
                        rel = torch.zeros_like(x) if grad is None else (grad * x).abs()
                        per_expert.append(rel.sum(dim=0).detach().double().cpu().numpy())
                    chunk.append(np.stack(per_expert, axis=1))
            sums = chunk if sums is None else [a + b for a, b in zip(sums, chunk)]
    finally:
        model.train(was_training)
    return sums


def _normalise_rows(v: np.ndarray) -> np.ndarray:
    total = v.sum(axis=1, keepdims=True)
    uniform = np.full_like(v, 1.0 / v.shape[1])
    return np.where(total > 0, v / np.where(total > 0, total, 1.0), uniform)


def expert_roi_table(voxel_routing_level: np.ndarray, roi_masks: dict[str, np.ndarray]) -> np.ndarray:
    """Share of each ROI's routing that goes to each expert.

    Parameters
    ----------
    voxel_routing_level : ndarray, shape (n_voxels, n_experts)
        One level of ``voxel_routing``.
    roi_masks : dict[str, ndarray of bool, shape (n_voxels,)]
        ROIs in column order.

    Returns
    -------
    ndarray, shape (n_experts, n_rois)
        Column r is the mean routing of ROI r's voxels (sums to 1); NaN for an empty ROI.
    """
    v = np.asarray(voxel_routing_level, dtype=np.float64)
    table = np.full((v.shape[1], len(roi_masks)), np.nan)
    for j, (name, mask) in enumerate(roi_masks.items()):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (v.shape[0],):
            raise ConfigError(f"ROI '{name}': expected a boolean mask of shape ({v.shape[0]},), "
                              f"found {mask.shape}")
        if mask.any():
            table[:, j] = v[mask].mean(axis=0)
    return table


def top_images_per_expert(usage: np.ndarray, image_index: np.ndarray, k: int = 8) -> np.ndarray:
    """The images that use each expert most (usage averaged over an image's repeats first).

    Parameters
    ----------
    usage : ndarray, shape (n_trials, n_experts)
        ``LevelRouting.usage``.
    image_index : ndarray of int, shape (n_trials,)
        The image shown on each trial.
    k : int

    Returns
    -------
    ndarray of int, shape (n_experts, min(k, n_images))
        Image indices, most-using first.
    """
    usage = np.asarray(usage, dtype=np.float64)
    image_index = np.asarray(image_index)
    if usage.ndim != 2 or image_index.shape != (usage.shape[0],):
        raise ConfigError(f"top images: expected usage (n_trials, n_experts) and image_index (n_trials,), found "
                          f"{usage.shape} and {image_index.shape}")
    images, inverse = np.unique(image_index, return_inverse=True)
    sums = np.zeros((len(images), usage.shape[1]))
    np.add.at(sums, inverse, usage)
    mean = sums / np.bincount(inverse, minlength=len(images))[:, None]
    k = min(int(k), len(images))
    order = np.argsort(-mean, axis=0, kind="stable")[:k]  # (k, n_experts)
    return images[order.T]


def routing_entropy(weights: np.ndarray, axis: int = -1, *, normalize: bool = True) -> np.ndarray:
    """Entropy of routing distributions along ``axis`` (the experts).

    Parameters
    ----------
    weights : ndarray
        Non-negative routing weights or usage, e.g. usage (n_trials, n_experts) → one entropy per trial, or a
        ``voxel_routing`` level (n_voxels, n_experts) → one per voxel. Normalised to sum to 1 along ``axis``.
    normalize : bool
        Divide by log(n_experts) so 0 = one expert, 1 = uniform.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = np.clip(w, 0.0, None)
    total = w.sum(axis=axis, keepdims=True)
    p = w / np.where(total > 0, total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axis)
    n = w.shape[axis]
    if normalize:
        h = h / np.log(n) if n > 1 else np.zeros_like(h)
    return h
