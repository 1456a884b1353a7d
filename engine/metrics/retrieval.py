"""Top-1 retrieval among random pools of test items, in both named directions (MindEyeV2, ``metrics.md`` §5).

Brain embeddings ``brain[b]`` (the model's prediction for test image b) and image embeddings ``image[i]`` (the target
embedding of ground-truth image i) are flattened and L2-normalised. Each repeat draws ``pool`` distinct test items
(300 in MindEyeV2) and forms ``S[b, i] = cos(brain_b, image_i)``:

- **brain → image** ("image retrieval"): for each brain row b, correct if ``argmax_i S[b, i] == b``;
- **image → brain** ("brain retrieval"): for each image column i, correct if ``argmax_b S[b, i] == i``.

Ties go to the lowest index in the pool (``argmax``). The result is the mean top-1 over ``repeats`` (30) draws with a
95 % Student-t interval over the draws; chance is ``1 / pool``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.config import Config

DIRECTIONS = ("brain_to_image", "image_to_brain")
DIRECTION_LABELS = {"brain_to_image": "brain → image (image retrieval)",
                    "image_to_brain": "image → brain (brain retrieval)"}


@dataclass(frozen=True)
class RetrievalConfig(Config):
    """Pool size, number of random draws and the seed of the draws."""

    pool: int = 300
    repeats: int = 30
    seed: int = 0


@dataclass(frozen=True)
class RetrievalResult:
    """Top-1 accuracy of one direction: mean over draws, 95 % interval, and each draw's value."""

    direction: str
    mean: float
    ci_low: float
    ci_high: float
    per_repeat: np.ndarray = field(repr=False)
    pool: int
    repeats: int
    chance: float
    every_item: bool = False  # the pool is every item: the draws do not vary, there is no interval

    def protocol(self) -> str:
        if self.every_item:
            return (f"top-1 {DIRECTION_LABELS[self.direction]} among all {self.pool} test items (fewer than the pool "
                    f"asked: every draw is the same set, so one value and no interval), cosine of L2-normalised "
                    f"flattened embeddings, chance {self.chance:.4f}")
        return (f"top-1 {DIRECTION_LABELS[self.direction]} among {self.pool} random test items, {self.repeats} draws, "
                f"mean and 95% t-interval, cosine of L2-normalised flattened embeddings, chance {self.chance:.4f}")


def _normalise(x) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def draw_pools(n_items: int, config: RetrievalConfig) -> np.ndarray:
    """The random pools, ``(repeats, pool)`` item indices (without replacement within a pool)."""
    pool = min(config.pool, n_items)
    rng = np.random.default_rng(config.seed)
    return np.stack([rng.choice(n_items, size=pool, replace=False) for _ in range(config.repeats)])


def top1_retrieval(brain, image, config: RetrievalConfig = RetrievalConfig()) -> dict[str, RetrievalResult]:
    """Top-1 retrieval in both directions.

    Parameters
    ----------
    brain : array (n_items, ...)
        Predicted embeddings, row b for test item b.
    image : array (n_items, ...)
        Target (true) embeddings of the same items, same order.
    config : RetrievalConfig
        A pool larger than ``n_items`` is reduced to ``n_items`` (and the result says so through ``pool``).

    Returns
    -------
    dict direction -> RetrievalResult, keys ``"brain_to_image"`` and ``"image_to_brain"``
    """
    b = _normalise(brain)
    im = _normalise(image)
    if b.shape != im.shape:
        raise ValueError(f"embedding shapes differ: brain {b.shape}, image {im.shape}")
    pools = draw_pools(len(b), config)
    pool = pools.shape[1]
    target = np.arange(pool)
    acc = {d: np.empty(len(pools)) for d in DIRECTIONS}
    for r, idx in enumerate(pools):
        s = b[idx] @ im[idx].T  # (pool brains, pool images)
        acc["brain_to_image"][r] = np.mean(np.argmax(s, axis=1) == target)
        acc["image_to_brain"][r] = np.mean(np.argmax(s, axis=0) == target)
    out = {}
    every_item = pool == len(b)
    for d, v in acc.items():
        lo, hi = (float("nan"), float("nan")) if every_item else mean_ci95(v)
        out[d] = RetrievalResult(direction=d, mean=float(v.mean()), ci_low=lo, ci_high=hi, per_repeat=v, pool=pool,
                                 repeats=len(v), chance=1.0 / pool, every_item=every_item)
    return out


def mean_ci95(values) -> tuple[float, float]:
    """95 % Student-t interval of the mean of ``values`` (NaN when fewer than two values)."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)
