"""Ridge cross-validation in the dual (kernel) form from one eigendecomposition shared by every fold and alpha.

With more features than samples (NSD decoding: ~4,000 trials × ~8,000–15,000 voxels) ridge lives in the span of the
samples, and the n × n Gram matrix ``K = X Xᵀ`` is the small side. Decomposing it per fold (as the per-fold dual path
in ``engine.models.ridge`` does) costs one ``eigh`` of ``n_train × n_train`` per fold, which dominates the fit.

When the folds partition the samples, one decomposition of the full Gram matrix gives every fold's held-out residuals
exactly (the leave-group-out identity of penalised least squares): with ``H`` the hat matrix of ridge fit on all
samples and ``M = I − H``,

    y_v − ŷ_{−v}(X_v) = (M_vv)⁻¹ (M y)_v,      M = U diag(α / (s + α)) Uᵀ,

where ``K_c = U diag(s) Uᵀ`` is the eigendecomposition of the centred Gram matrix. With an intercept, ``U`` spans the
complement of the constant vector (a Householder reflection removes it before ``eigh``), so ``M`` also contains the
intercept's refit on each training fold: the residuals are those of the fold-wise centred fit, as in scikit-learn's
``Ridge`` fit on the training fold. Per alpha this costs ``2 n² t`` for ``M y`` plus, per fold, ``n_v² n`` to form
``M_vv`` and a Cholesky solve, all matrix products; the same ``U`` then gives the refit on all samples.

Float32 ``eigh`` resolves eigenvalues only down to about ``n · ε · s_max``; below that they are noise, and a small
alpha would divide by it. They are set to zero (the rank tolerance of ``numpy.linalg.matrix_rank``), which keeps
rank-deficient data (duplicated trials, fewer distinct patterns than trials) as accurate as well-conditioned data.
"""

from __future__ import annotations

import numpy as np

EIGH_FLOPS = 12.0  # an n × n ``eigh`` with eigenvectors costs about this many times n³ matrix-product flops


def partitions(folds, n: int) -> bool:
    """True when the validation sets are disjoint, cover 0…n−1, and each training set is the rest."""
    seen = np.zeros(n, bool)
    for train, val in folds:
        val = np.asarray(val)
        if val.size == 0 or np.any(seen[val]) or len(train) + len(val) != n:
            return False
        seen[val] = True
        rest = np.ones(n, bool)
        rest[val] = False
        if not np.array_equal(np.sort(np.asarray(train)), np.flatnonzero(rest)):
            return False
    return bool(seen.all())


def prefer_shared(folds, n: int, n_targets: int, n_alphas: int) -> bool:
    """Whether one shared decomposition is cheaper than one ``eigh`` per fold (flop model; both refit the same)."""
    t = n_targets
    shared = n_alphas * (2.0 * n * n * t + sum(len(v) ** 2 * n + len(v) ** 3 / 3 + 2.0 * len(v) ** 2 * t
                                               for _, v in folds))
    per_fold = sum(EIGH_FLOPS * len(tr) ** 3 + n_alphas * 2.0 * len(v) * len(tr) * t for tr, v in folds)
    return shared < per_fold


def clip_rank(s2, size: int):
    """Eigenvalues of a float32 Gram matrix with those below its rank tolerance (``s_max · size · ε``) set to 0."""
    return s2 * (s2 > s2.max() * size * float(np.finfo(np.float32).eps))


def kernel_eigh(ops, gram, *, center: bool):
    """Eigenvalues ``s2`` (r,) and orthonormal eigenvectors ``U`` (n, r) of the (centred) Gram matrix.

    ``gram`` is ``X Xᵀ`` of features already centred with the overall mean when ``center``; the constant vector is
    then an exact null direction, removed with the Householder reflection ``P`` (``P e₀ = 1/√n``) so ``U`` spans its
    complement (r = n − 1) instead of carrying a float-noise eigenvalue for it.
    """
    n = gram.shape[0]
    if not center:
        s2, u = ops.eigh(gram)
    else:
        h = ops.vector(np.full(n, 1.0 / np.sqrt(n)) - np.eye(1, n)[0])
        beta = 2.0 / float(ops.to_numpy(h @ h))
        kp = gram - beta * (gram @ h)[:, None] * h[None, :]  # K P
        pkp = kp - beta * h[:, None] * (h @ kp)[None, :]  # P K P
        s2, v = ops.eigh(pkp[1:, 1:])
        u = ops.zeros((n, n - 1))
        u[1:] = v
        u = u - beta * h[:, None] * (h[1:] @ v)[None, :]  # P [0; V]
    return clip_rank(s2, n), u


def kernel_cv_scores(ops, s2, u, Y, folds, alphas: np.ndarray, chunk: int) -> np.ndarray:
    """(n_alphas, n_targets) validation R² averaged over folds, from the decomposition of ``kernel_eigh``.

    ``Y`` (n, t) is centred with the overall mean when the decomposition is; each fold's R² uses its own
    validation mean, as ``sklearn.metrics.r2_score`` does.
    """
    t = Y.shape[1]
    c = ops.zeros((u.shape[1], t))  # Uᵀ Y, shared by every alpha
    ss = np.zeros((len(folds), t), np.float64)
    for start in range(0, t, chunk):
        sl = slice(start, min(t, start + chunk))
        yc = ops.cols(Y, sl)
        c[:, sl] = u.T @ yc
        for f, (_, val) in enumerate(folds):
            yv = ops.take(yc, val)
            ss[f, sl] = ops.to_numpy(((yv - yv.mean(0)) ** 2).sum(0))
    ss = np.maximum(ss, 1e-30)
    rows = [ops.take(u, val) for _, val in folds]
    scores = np.zeros((len(alphas), t), np.float64)
    for i, alpha in enumerate(alphas.tolist()):  # Python floats: a numpy float64 scalar would upcast w to float64
        w = alpha / (s2 + alpha)
        sw = w ** 0.5
        factors = [ops.gram_factor(r * sw[None, :]) for r in rows]
        for start in range(0, t, chunk):
            sl = slice(start, min(t, start + chunk))
            my = u @ (w[:, None] * ops.cols(c, sl))  # (M Y) for every sample
            for f, (_, val) in enumerate(folds):
                resid = ops.cho_solve(factors[f], ops.take(my, val))
                sse = ops.to_numpy((resid * resid).sum(0)).astype(np.float64)
                scores[i, sl] += 1.0 - sse / ss[f, sl]
    return scores / len(folds)
