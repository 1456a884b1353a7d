import numpy as np
import pytest
from scipy.spatial.distance import correlation

from engine.metrics import identification


def _brute_two_way(g, r):
    n = len(g)
    scores = []
    for i in range(n):
        cii = np.corrcoef(g[i].ravel(), r[i].ravel())[0, 1]
        wins = sum(np.corrcoef(g[j].ravel(), r[i].ravel())[0, 1] < cii - identification.TIE_EPS
                   for j in range(n) if j != i)
        scores.append(wins / (n - 1))
    return np.array(scores)


def _inputs(rng, kind):
    if kind == "random":
        g = rng.standard_normal((30, 5, 4))
        return g, g + 2.0 * rng.standard_normal(g.shape)
    # structured: ramps, duplicated ground truths (exact ties) and scaled copies
    base = np.linspace(0, 1, 12)
    g = np.stack([np.roll(base, i % 6) for i in range(12)])
    r = g[::-1] * 3 + 1
    r[::3] = g[::3]
    return g, r


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_two_way_matches_brute_force(rng, kind, monkeypatch):
    g, r = _inputs(rng, kind)
    ref = _brute_two_way(g, r)
    np.testing.assert_allclose(identification.two_way_scores(g, r), ref, atol=1e-6)
    monkeypatch.setattr(identification, "_BLOCK", 7)  # blocks that do not divide n
    np.testing.assert_allclose(identification.two_way_scores(g, r), ref, atol=1e-6)
    assert identification.two_way_identification(g, r) == pytest.approx(ref.mean(), abs=1e-6)


def test_two_way_perfect_and_chance(rng):
    g = rng.standard_normal((50, 20))
    assert identification.two_way_identification(g, g) == 1.0
    chance = identification.two_way_identification(g, rng.standard_normal((50, 20)))
    assert 0.3 < chance < 0.7


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_correlation_distance_matches_scipy(rng, kind):
    g, r = _inputs(rng, kind)
    ref = [correlation(g[i].ravel(), r[i].ravel()) for i in range(len(g))]
    np.testing.assert_allclose(identification.correlation_distance(g, r), ref, atol=1e-6)


def test_pearson_matrix_matches_corrcoef(rng):
    a, b = rng.standard_normal((4, 9)), rng.standard_normal((3, 9))
    np.testing.assert_allclose(identification.pearson_matrix(a, b), np.corrcoef(a, b)[:4, 4:], atol=1e-12)
