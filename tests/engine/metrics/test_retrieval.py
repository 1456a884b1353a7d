import numpy as np
import pytest
from scipy import stats

from engine.metrics.retrieval import RetrievalConfig, draw_pools, mean_ci95, top1_retrieval


def _brute(brain, image, pools):
    fwd, bwd = [], []
    for idx in pools:
        p = len(idx)
        cos = np.zeros((p, p))
        for a in range(p):
            for c in range(p):
                u, v = brain[idx[a]].ravel(), image[idx[c]].ravel()
                cos[a, c] = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
        fwd.append(np.mean([max(range(p), key=lambda c: (cos[b, c], -c)) == b for b in range(p)]))
        bwd.append(np.mean([max(range(p), key=lambda b: (cos[b, i], -b)) == i for i in range(p)]))
    return np.array(fwd), np.array(bwd)


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_retrieval_matches_brute_force(rng, kind):
    if kind == "random":
        image = rng.standard_normal((40, 3, 5))
        brain = image + 1.5 * rng.standard_normal(image.shape)
    else:  # repeated rows (ties) and an asymmetric map, so the two directions differ
        image = np.tile(np.eye(8), (5, 1))[:40] + 0.01 * np.arange(40)[:, None]
        brain = np.roll(image, 1, axis=1) + image
    cfg = RetrievalConfig(pool=15, repeats=6, seed=3)
    out = top1_retrieval(brain, image, cfg)
    fwd, bwd = _brute(brain, image, draw_pools(40, cfg))
    np.testing.assert_allclose(out["brain_to_image"].per_repeat, fwd, atol=1e-6)
    np.testing.assert_allclose(out["image_to_brain"].per_repeat, bwd, atol=1e-6)
    assert out["brain_to_image"].mean == pytest.approx(fwd.mean())
    assert out["brain_to_image"].chance == pytest.approx(1 / 15)


def test_pool_larger_than_items_is_clamped_and_named(rng):
    x = rng.standard_normal((10, 4))
    out = top1_retrieval(x, x, RetrievalConfig(pool=300, repeats=3))
    assert out["brain_to_image"].pool == 10 and out["image_to_brain"].mean == 1.0
    # every draw is then the same set of items: one value, and no interval rather than an empty one
    r = out["brain_to_image"]
    assert "among all 10 test items" in r.protocol() and "no interval" in r.protocol()
    assert np.isnan(r.ci_low) and np.isnan(r.ci_high) and r.every_item


def test_ci_matches_scipy_t_interval(rng):
    v = rng.random(30)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert mean_ci95(v) == pytest.approx((lo, hi), abs=1e-12)
