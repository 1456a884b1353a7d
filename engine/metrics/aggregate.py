"""Aggregation over the k samples generated per test item: mean, best-of-k, and MinD-Vis's best sample set.

A metric computed for each sample gives ``values`` of shape ``(n_items, k)``; column s is "sample set s" (sample s of
every item). Three summaries, always labelled in tables:

- ``mean``: mean over items and samples (equals the mean over sample sets of each set's mean);
- ``best_of_k``: for each item the best of its k samples (an oracle choice, as in best-of-k reporting), then the mean
  over items;
- ``best_set``: the best sample set's mean (MinD-Vis ``gen_eval`` "max" variant).
"""

from __future__ import annotations

import numpy as np

AGGREGATES = ("mean", "best_of_k")
AGGREGATE_LABELS = {"mean": "mean over k samples", "best_of_k": "best-of-k per item (oracle)",
                    "best_set": "best sample set (MinD-Vis max)"}
# Metric names (as in evaluation tables) whose smaller values are better; every other metric: larger is better.
LOWER_IS_BETTER = ("MSE", "corr-dist")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of the metric named ``metric`` (``"SSIM"``, ``"corr-dist demo"``...) is better."""
    return not metric.startswith(LOWER_IS_BETTER)


def _as_2d(values) -> np.ndarray:
    v = np.asarray(values, np.float64)
    return v[:, None] if v.ndim == 1 else v


def mean_over_samples(values) -> float:
    """Mean of ``(n_items, k)`` values over items and samples (NaNs ignored)."""
    return float(np.nanmean(_as_2d(values)))


def best_per_item(values, higher_is_better: bool = True) -> np.ndarray:
    """``(n_items,)``: each item's best sample value."""
    v = _as_2d(values)
    return np.nanmax(v, axis=1) if higher_is_better else np.nanmin(v, axis=1)


def best_of_k(values, higher_is_better: bool = True) -> float:
    """Mean over items of each item's best sample."""
    return float(np.mean(best_per_item(values, higher_is_better)))


def best_set(values, higher_is_better: bool = True) -> float:
    """The best sample set's mean (column-wise mean, then max or min)."""
    means = np.nanmean(_as_2d(values), axis=0)
    return float(means.max() if higher_is_better else means.min())


def summarise(values, higher_is_better: bool = True) -> dict[str, float]:
    """All three summaries of ``(n_items, k)`` values."""
    return {"mean": mean_over_samples(values), "best_of_k": best_of_k(values, higher_is_better),
            "best_set": best_set(values, higher_is_better)}
