"""n-way top-1 semantic classification (MinD-Vis style) and its label-based variant (``metrics.md`` §4).

For test item i with reference class ``c*_i`` and class scores ``p_i`` of its reconstruction (softmax of a classifier,
or any score where larger means more likely): each trial draws n − 1 distinct classes from the other C − 1; the trial
succeeds if ``p_i[c*_i]`` is the largest among the n candidates (a tie goes to the reference class, as ``argmax``
returning the first index does in MinD-Vis's code). Accuracy = mean over trials and items; chance = 1/n.

- **Classifier-based** (MinD-Vis): ``c*`` = the classifier's argmax on the *ground-truth image*, ``p`` = its softmax on
  the reconstruction. MinD-Vis's code uses n = 50 and 1000 trials (its paper says 100-way).
- **Label-based**: ``c*`` = the dataset's category label of the test image; the scores are cosine similarities of the
  reconstruction's features to each category's centroid (mean feature of the ground-truth images of that category), a
  nearest-centroid classifier on the chosen feature extractor.

Trials are drawn in a vectorised way that has exactly the distribution of drawing the n − 1 classes one trial at a time:
only the number of drawn classes that beat ``c*`` matters, which is hypergeometric. ``n_way_expected`` gives the
infinite-trial value in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from engine.config import Config


@dataclass(frozen=True)
class NWayConfig(Config):
    """n (classes per trial, including the reference), trials per item, seed of the draws."""

    n: int = 50
    trials: int = 1000
    seed: int = 0


def n_beating(scores, target) -> np.ndarray:
    """For each item, the number of other classes scoring strictly higher than the reference class: ``(n_items,)``."""
    p = np.asarray(scores, np.float64)
    t = np.asarray(target, np.int64)
    ref = p[np.arange(len(p)), t]
    return (p > ref[:, None]).sum(axis=1)


def _check(scores, target, n: int) -> int:
    p = np.asarray(scores)
    if p.ndim != 2 or len(p) != len(target):
        raise ValueError(f"expected scores (n_items, n_classes) and target (n_items,), got {p.shape} and "
                         f"{np.shape(target)}")
    if not 2 <= n <= p.shape[1]:
        raise ValueError(f"n-way needs 2 <= n <= n_classes ({p.shape[1]}), got n={n}")
    return p.shape[1]


def n_way_top1(scores, target, config: NWayConfig = NWayConfig()) -> np.ndarray:
    """Per-item n-way top-1 accuracy over ``config.trials`` random trials.

    Parameters
    ----------
    scores : array (n_items, n_classes)
        Class scores of each reconstruction (softmax probabilities, or similarities).
    target : array (n_items,) int
        Reference class of each item.

    Returns
    -------
    (n_items,) float64: fraction of successful trials per item
    """
    n_classes = _check(scores, target, config.n)
    m = n_beating(scores, target)
    rng = np.random.default_rng(config.seed)
    # number of "beating" classes among the n - 1 drawn from the C - 1 others
    drawn = rng.hypergeometric(np.broadcast_to(m[:, None], (len(m), config.trials)),
                               np.broadcast_to((n_classes - 1 - m)[:, None], (len(m), config.trials)),
                               config.n - 1)
    return (drawn == 0).mean(axis=1)


def n_way_expected(scores, target, n: int) -> np.ndarray:
    """Infinite-trial n-way accuracy per item: ``C(C−1−m, n−1) / C(C−1, n−1)`` with m classes beating ``c*``."""
    n_classes = _check(scores, target, n)
    m = n_beating(scores, target)
    k = n - 1
    others = n_classes - 1
    free = others - m
    out = np.zeros(len(m))
    ok = free >= k

    def lcomb(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    out[ok] = np.exp(lcomb(free[ok], k) - lcomb(others, k))
    return out


def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def centroid_scores(features, centroid_features, centroid_labels, n_classes: int) -> np.ndarray:
    """Cosine similarity of each feature row to each class centroid: ``(n_items, n_classes)``.

    Parameters
    ----------
    features : (n_items, d) features of the reconstructions
    centroid_features : (n_ref, d) features of labelled reference images (the ground truths)
    centroid_labels : (n_ref,) int in [0, n_classes), -1 = unlabelled (ignored)
    n_classes : int
        Classes with no reference image get score -inf (never beat the reference class).
    """
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    r = np.asarray(centroid_features, np.float64).reshape(len(centroid_features), -1)
    lab = np.asarray(centroid_labels, np.int64)
    cent = np.zeros((n_classes, f.shape[1]))
    counts = np.bincount(lab[lab >= 0], minlength=n_classes)
    np.add.at(cent, lab[lab >= 0], r[lab >= 0])
    present = counts > 0
    cent[present] /= counts[present, None]
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    cn = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    s = fn @ cn.T
    s[:, ~present] = -np.inf
    return s
