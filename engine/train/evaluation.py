"""Validation metrics of a decoder in the target embedding space (test set, one row per image).

- ``two_way``: exhaustive 2-way identification with Pearson correlation (``engine.metrics.identification``); chance 0.5.
- ``top1_retrieval``: fraction of images whose prediction is most cosine-similar to its own target among all test
  targets; chance 1 / n_images.
- ``cosine``: mean cosine similarity between prediction and target.
- ``mse``: mean squared error.
- ``two_way_centered`` (when a ``center`` is given): 2-way after subtracting the mean *training* target from both
  predictions and targets, so the pattern every embedding shares does not dominate the correlations.
"""

from __future__ import annotations

import numpy as np


def top1_retrieval(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of rows i with argmax_j cos(pred_i, true_j) == i; inputs (n, ...) flattened per row."""
    p = _unit(pred)
    t = _unit(true)
    sim = p @ t.T
    return float(np.mean(sim.argmax(axis=1) == np.arange(len(p))))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embedding_metrics(pred: np.ndarray, true: np.ndarray, center: np.ndarray | None = None) -> dict[str, float]:
    """``two_way``, ``top1_retrieval``, ``cosine`` and ``mse`` of predictions ``(n, *shape)`` vs targets.

    ``center`` (``*shape``), e.g. the mean training target, adds ``two_way_centered``.
    """
    from engine.metrics.identification import two_way_identification

    pred = np.asarray(pred, np.float64).reshape(len(pred), -1)
    true = np.asarray(true, np.float64).reshape(len(true), -1)
    out = {
        "cosine": float(np.mean(np.sum(_unit(pred) * _unit(true), axis=1))),
        "mse": float(np.mean((pred - true) ** 2)),
    }
    if len(pred) >= 2:
        out["two_way"] = float(two_way_identification(true, pred))
        out["top1_retrieval"] = top1_retrieval(pred, true)
        if center is not None:
            c = np.asarray(center, np.float64).reshape(1, -1)
            out["two_way_centered"] = float(two_way_identification(true - c, pred - c))
    return out
