import itertools

import numpy as np
import pytest

from engine.metrics import semantic
from engine.metrics.semantic import NWayConfig


def _exhaustive(p, t, n):
    """Average success over every possible choice of the n - 1 distractor classes."""
    acc = []
    for i in range(len(p)):
        others = [c for c in range(p.shape[1]) if c != t[i]]
        wins = [p[i, t[i]] >= max(p[i, list(combo)]) for combo in itertools.combinations(others, n - 1)]
        acc.append(np.mean(wins))
    return np.array(acc)


def _inputs(rng, kind):
    if kind == "random":
        p = rng.random((12, 9))
        return p, rng.integers(0, 9, 12)
    p = np.tile(np.arange(9, dtype=float), (9, 1))  # structured: class c scores c; plus ties
    p[::2, 3] = p[::2, 5]
    return p, np.arange(9)


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("n", [2, 4, 9])
def test_expected_accuracy_matches_exhaustive(rng, kind, n):
    p, t = _inputs(rng, kind)
    np.testing.assert_allclose(semantic.n_way_expected(p, t, n), _exhaustive(p, t, n), atol=1e-6)


def test_monte_carlo_agrees_with_brute_force_draw_loop(rng):
    p, t = rng.random((6, 20)), rng.integers(0, 20, 6)
    n, trials = 5, 4000
    loop_rng = np.random.default_rng(1)
    loop = []
    for i in range(len(p)):  # MinD-Vis's loop: draw n - 1 distinct other classes per trial
        others = np.array([c for c in range(20) if c != t[i]])
        wins = [p[i, t[i]] >= p[i, loop_rng.choice(others, n - 1, replace=False)].max() for _ in range(trials)]
        loop.append(np.mean(wins))
    ours = semantic.n_way_top1(p, t, NWayConfig(n=n, trials=trials, seed=2))
    exact = semantic.n_way_expected(p, t, n)
    np.testing.assert_allclose(ours, exact, atol=0.04)
    np.testing.assert_allclose(loop, exact, atol=0.04)


def test_n_way_is_seeded_and_bounded(rng):
    p, t = rng.random((5, 30)), rng.integers(0, 30, 5)
    a = semantic.n_way_top1(p, t, NWayConfig(n=10, trials=50, seed=7))
    assert np.array_equal(a, semantic.n_way_top1(p, t, NWayConfig(n=10, trials=50, seed=7)))
    assert np.all((0 <= a) & (a <= 1))
    assert semantic.n_way_top1(np.eye(30)[:5], np.arange(5), NWayConfig(n=10, trials=20)).tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="n_classes"):
        semantic.n_way_top1(p, t, NWayConfig(n=31))


def test_centroid_scores_match_loop(rng):
    ref, lab = rng.standard_normal((10, 6)), np.array([0, 1, 1, 2, 2, 2, 0, -1, 1, 0])
    f = rng.standard_normal((4, 6))
    s = semantic.centroid_scores(f, ref, lab, 4)
    for c in range(3):
        cent = ref[lab == c].mean(axis=0)
        for i in range(4):
            assert s[i, c] == pytest.approx(f[i] @ cent / np.linalg.norm(f[i]) / np.linalg.norm(cent), abs=1e-9)
    assert np.all(np.isneginf(s[:, 3]))  # a class without reference images never wins
