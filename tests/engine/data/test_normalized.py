"""``NormalizedBetas``: the z-scored view reads exactly what an eager z-score would hold, for every selector."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.normalized import NormalizedBetas


def _eager(base, scale, bias, group):
    g = np.zeros(len(base), int) if group is None else group
    return (base.astype(np.float32) * scale[g] + bias[g]).astype(base.dtype)


@pytest.mark.parametrize("n,v", [(40, 7), (300, 400)])  # numpy path and the vectorised (torch) path
@pytest.mark.parametrize("grouped", [False, True])
def test_every_selector_reads_the_eager_values(n, v, grouped):
    rng = np.random.default_rng(0)
    base = (rng.standard_normal((n, v)) * 3 + 2).astype(np.float16)
    n_groups = 3 if grouped else 1
    scale = rng.uniform(0.2, 2.0, (n_groups, v)).astype(np.float32)
    bias = rng.standard_normal((n_groups, v)).astype(np.float32)
    group = rng.integers(0, n_groups, n) if grouped else None
    original = base.copy()
    view = NormalizedBetas(base, scale, bias, group)
    want = _eager(base, scale, bias, group)
    assert view.shape == (n, v) and view.dtype == np.float16 and len(view) == n
    rows = rng.permutation(n)[: n // 2]
    mask = rng.random(n) < 0.3
    for sel in (3, -1, slice(2, 9), slice(None, None, 3), rows, np.r_[rows, rows[:3]], mask,
                (rows, 2), (rows, slice(1, 5)), (rows, np.array([4, 0, 2])), (slice(None), 5), (7, slice(None))):
        got = view[sel]
        # a (rows, cols) pair selects the outer product, like LazyBetas (numpy would pair two index arrays)
        exp = want[sel[0]][..., sel[1]] if isinstance(sel, tuple) else want[sel]
        assert got.shape == exp.shape, sel
        np.testing.assert_allclose(got.astype(np.float32), exp.astype(np.float32), rtol=2e-3, atol=2e-3,
                                   err_msg=str(sel))
    np.testing.assert_allclose(np.asarray(view, np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
    seen = []
    out = view.load(on_block=lambda b, s: seen.append((s, len(b))))
    np.testing.assert_allclose(out.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
    assert sum(k for _, k in seen) == n
    np.testing.assert_array_equal(base, original)  # the base is never written, whatever the selector


def test_bad_indices_and_shapes_are_refused():
    view = NormalizedBetas(np.zeros((5, 3), np.float32), np.ones((1, 3)), np.zeros((1, 3)))
    for sel in (5, -6, np.array([0, 9]), np.ones(4, bool), np.array([0.5])):
        with pytest.raises(IndexError):
            view[sel]
    with pytest.raises(ValueError, match="do not fit"):
        NormalizedBetas(np.zeros((5, 3), np.float32), np.ones((1, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="row_group"):
        NormalizedBetas(np.zeros((5, 3), np.float32), np.ones((2, 3)), np.zeros((2, 3)), np.zeros(4, int))


def test_zscore_reads_through_the_loaded_matrix_without_copying_it():
    from engine.data.preprocess import zscore
    from engine.data.subject import Subject, TrialTable

    rng = np.random.default_rng(1)
    n, v = 60, 5
    betas = (rng.standard_normal((n, v)) * 4 + 10).astype(np.float16)
    split = np.r_[np.zeros(45, int), np.ones(15, int)]
    trials = TrialTable(image_index=np.arange(n) % 20, split=split, session=np.repeat([1, 2, 3], 20),
                        run=np.ones(n, int), repeat=np.zeros(n, int))
    s = Subject(betas=betas, trials=trials, images=np.zeros((20, 4, 4, 3), np.uint8))
    z = zscore(s, "voxel")
    assert isinstance(z.betas, NormalizedBetas) and z.betas.base.dtype == np.float16
    assert z.betas.base.nbytes == betas.nbytes  # one float16 copy: the statistics are applied as rows are read
    train = np.asarray(z.betas, np.float32)[split == 0]
    np.testing.assert_allclose(train.mean(0), 0, atol=5e-3)
    np.testing.assert_allclose(train.std(0), 1, atol=5e-3)
    zs = zscore(s, "session")
    got = np.asarray(zs.betas, np.float32)
    for sess in (1, 2, 3):
        rows = (trials.session == sess) & (split == 0)
        np.testing.assert_allclose(got[rows].mean(0), 0, atol=5e-3)
