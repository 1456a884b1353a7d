"""Ridge regression with a per-target regularisation chosen by K-fold cross-validation.

Used both ways round: decoding (voxels → image embedding) and encoding (image embedding → voxels).

How it is fast
--------------
The solver decomposes the smaller side of the problem once and scores every alpha from that decomposition.

* More samples than features (primal): per fold, ``eigh`` of the centred ``XᵀX``. The validation prediction for every
  alpha is ``(A · d_α) @ B`` with ``A = X_val V`` (n_val, r), ``B = Vᵀ X_trᵀ Y_tr`` (r, n_targets) and
  ``d_α = 1 / (s² + α)``: the alphas only rescale the r columns of ``A``, so all alphas are scored with one stacked
  matrix product.
* More features than samples (dual, e.g. NSD voxels vs trials): one ``eigh`` of the n × n Gram matrix ``XXᵀ`` serves
  every fold, every alpha and the refit, through the leave-group-out identity (``engine.models.ridge_kernel``). When
  the folds do not partition the samples, each fold's Gram block is decomposed instead.

Targets are processed in chunks so memory stays bounded; the same code runs on numpy or torch (CPU or CUDA).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.atomic import atomic_dir
from engine.errors import CheckpointError, ConfigError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.models.ridge_backends import array_ops
from engine.models.ridge_kernel import clip_rank, kernel_cv_scores, kernel_eigh, partitions, prefer_shared

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))
SOLVERS = ("auto", "primal", "dual")
_MEMORY_BUDGET = 256 * 2**20  # bytes for the stacked per-alpha products of one chunk


@dataclass(frozen=True)
class RidgeCVConfig:
    """Constructor arguments of ``RidgeCV`` (what ``config.json`` stores)."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    cv: int = 5
    backend: str = "numpy"
    device: str | None = None
    fit_intercept: bool = True
    target_chunk: int | None = None
    solver: str = "auto"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["alphas"] = [float(a) for a in self.alphas]
        return d


# ----------------------------------------------------------------------------------------------------------------------
# The solver


@dataclass
class _Basis:
    """One decomposition of centred training features: predictions are ``(A_of(X) * d_α) @ project(Y)``."""

    s2: Any  # (r,) eigenvalues of XᵀX (= squared singular values), clipped at 0
    v: Any  # (p, r) primal basis, or (n, r) dual basis when ``dual``
    x: Any  # centred training features (kept for the dual form)
    dual: bool

    def inverse(self, alphas, axis: int):
        """``1 / (s² + α)`` with the eigenvalues along ``axis``; 0 in the null space, where the exact projections are
        0 and float32 leaves only noise that a small alpha would amplify."""
        s2 = self.s2[:, None] if axis == 0 else self.s2[None, :]
        return (s2 > 0) / (s2 + alphas)

    def project(self, y):
        """(r, t): coordinates of ``Xᵀ y`` in the eigenbasis (primal) or of ``y`` (dual)."""
        if self.dual:
            return self.v.T @ y
        return self.v.T @ (self.x.T @ y)

    def project_xty(self, xty):
        """(r, t): primal coordinates from a precomputed ``Xᵀy`` (p, t)."""
        return self.v.T @ xty

    def features(self, x_new):
        """(n_new, r): new (centred) samples expressed in the basis."""
        if self.dual:
            return (x_new @ self.x.T) @ self.v
        return x_new @ self.v

    def coef(self, z):
        """(p, t) primal weights from basis coordinates ``z`` (already scaled by ``d_α``)."""
        if self.dual:
            return self.x.T @ (self.v @ z)
        return self.v @ z


def _decompose(ops, x, gram=None, *, dual: bool) -> _Basis:
    n, p = x.shape
    if gram is None or not dual:
        gram = ops.gram(x) if dual else x.T @ x
    s2, v = ops.eigh(gram)
    return _Basis(s2=clip_rank(s2, max(n, p)), v=v, x=x, dual=dual)


def _dual_fold(ops, gram, train, val, *, center: bool):
    """Dual basis of one fold from the full Gram matrix, and the validation samples in that basis.

    Centring the training rows by their mean m turns ``K_ij = x_i·x_j`` into
    ``K_ij − k̄_i − k̄_j + k̄`` with ``k̄_i = mean_{l∈train} K_il`` and ``k̄`` the mean over train × train.
    """
    k_tt = ops.block(gram, train, train)
    k_vt = ops.block(gram, val, train)
    if center:
        kbar_t = k_tt.mean(1)
        kbar_v = k_vt.mean(1)
        kbar = kbar_t.mean()
        k_tt = k_tt - kbar_t[:, None] - kbar_t[None, :] + kbar
        k_vt = k_vt - kbar_v[:, None] - kbar_t[None, :] + kbar
    s2, v = ops.eigh(k_tt)
    basis = _Basis(s2=clip_rank(s2, len(train)), v=v, x=None, dual=True)
    return basis, k_vt @ v


def _folds(cv, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous K folds (like scikit-learn's ``KFold`` without shuffling), or the user's (train, val) pairs."""
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        k = int(cv)
        if k < 2 or k > n:
            raise ConfigError(f"RidgeCV: cv must be an integer in [2, n_samples={n}], got {k}")
        sizes = np.full(k, n // k)
        sizes[: n % k] += 1
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            val = np.arange(a, b)
            train = np.concatenate([np.arange(0, a), np.arange(b, n)])
            out.append((train, val))
        return out
    splits = cv.split(np.zeros((n, 1))) if hasattr(cv, "split") else cv
    return [(np.asarray(tr), np.asarray(va)) for tr, va in splits]


class RidgeCV:
    """Multi-target ridge regression with one alpha per target picked by K-fold cross-validation.

    Parameters
    ----------
    alphas : sequence of float
        Candidate regularisation strengths, e.g. ``np.logspace(-2, 6, 17)``.
    cv : int or iterable of (train, val) index pairs or a splitter with ``split``
        Folds for choosing alpha; an int gives contiguous K folds (no shuffling, so trial order is respected).
    backend : {"numpy", "torch"}
        Array library doing the work. "torch" runs on CUDA when present (or on ``device``).
    device : str, optional
        Torch device ("cpu", "cuda", "cuda:1"); only with ``backend="torch"``.
    fit_intercept : bool
        Centre features and targets with the training means and learn an intercept.
    target_chunk : int, optional
        Targets solved at once; by default chosen so the stacked per-alpha predictions stay within ~256 MB.
    solver : {"auto", "primal", "dual"}
        "primal" decomposes ``XᵀX`` (features × features), "dual" the Gram matrix ``XXᵀ`` (samples × samples; one
        decomposition for all folds when the folds partition the samples). "auto" takes the smaller side: dual when
        there are more features than samples (NSD voxels vs trials), primal otherwise. All give the same model.

    Attributes
    ----------
    coef_ : ndarray (n_features, n_targets) float32
    intercept_ : ndarray (n_targets,) float32
    alphas_ : ndarray (n_targets,) float32
        Alpha chosen for each target.
    cv_scores_ : ndarray (n_alphas, n_targets) float32
        Validation R² averaged over folds, for every candidate alpha.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, cv=5, backend: str = "numpy",
                 device: str | None = None, fit_intercept: bool = True, target_chunk: int | None = None,
                 solver: str = "auto") -> None:
        self.alphas = alphas
        self.cv = cv
        self.backend = backend
        self.device = device
        self.fit_intercept = fit_intercept
        self.target_chunk = target_chunk
        self.solver = solver

    @property
    def config(self) -> RidgeCVConfig:
        cv = self.cv if isinstance(self.cv, (int, np.integer)) else -1
        return RidgeCVConfig(alphas=tuple(float(a) for a in np.asarray(self.alphas).ravel()), cv=int(cv),
                             backend=self.backend, device=self.device, fit_intercept=bool(self.fit_intercept),
                             target_chunk=self.target_chunk, solver=self.solver)

    # --- fitting -----------------------------------------------------------------------------------------------------
    def fit(self, X, Y) -> "RidgeCV":
        """Choose an alpha per target by cross-validation, then refit on all samples.

        Parameters
        ----------
        X : array (n_samples, n_features)
        Y : array (n_samples, n_targets) or (n_samples,)
        """
        ops = array_ops(self.backend, self.device)
        alphas = np.asarray(self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or np.any(~np.isfinite(alphas)) or np.any(alphas <= 0):
            raise ConfigError(f"RidgeCV: alphas must be positive finite numbers, got {alphas.tolist()}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"RidgeCV: solver must be one of {SOLVERS}, got {self.solver!r}")
        X = ops.asarray(X)
        Y = ops.asarray(Y)
        self._ravel = Y.ndim == 1
        if self._ravel:
            Y = Y[:, None]
        if X.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"RidgeCV.fit: X must be (n_samples, n_features) and Y (n_samples, n_targets) with the "
                             f"same n_samples, got X {tuple(X.shape)} and Y {tuple(Y.shape)}")
        n, p = X.shape
        t = Y.shape[1]
        folds = _folds(self.cv, n)
        chunk = self.target_chunk or self._auto_chunk(folds, p, len(alphas), t)
        if self.fit_intercept:
            # Centre once with the overall means (a shift the intercept absorbs), so the fold-wise corrections below
            # are small and the float32 subtraction XᵀY − X_valᵀY_val loses no precision.
            mx, my = X.mean(0), Y.mean(0)
            X, Y = X - mx, Y - my
        if self._dual(n, p) and partitions(folds, n) and prefer_shared(folds, n, t, len(alphas)):
            # More features than samples: one eigendecomposition of the Gram matrix serves every fold, every alpha
            # and the refit (engine.models.ridge_kernel).
            s2, u = kernel_eigh(ops, ops.gram(X), center=self.fit_intercept)
            scores = kernel_cv_scores(ops, s2, u, Y, folds, alphas, chunk)
            basis, xty = _Basis(s2=s2, v=u, x=X, dual=True), None
        else:
            # XᵀY over all samples, computed once: each primal fold gets its X_trᵀY_tr by subtracting the validation
            # part, and the final refit reuses it.
            primal = [not self._dual(len(tr), p) for tr, _ in folds] + [not self._dual(n, p)]
            xty = self._xty(ops, X, Y, chunk) if any(primal) else None
            # Likewise the Gram matrix XXᵀ when folds have fewer samples than features: each fold's (centred)
            # training Gram and validation-by-training block are sub-blocks of it.
            gram = ops.gram(X) if not all(primal) else None
            scores = self._per_fold_scores(ops, X, Y, folds, alphas, chunk, xty, gram) / len(folds)
            basis = _decompose(ops, X, gram=gram, dual=self._dual(n, p))  # for the refit on all samples
        self.cv_scores_ = scores.astype(np.float32)
        self.alphas_ = alphas[scores.argmax(0)].astype(np.float32)
        self._refit(ops, basis, Y, xty, chunk)
        if self.fit_intercept:
            self.intercept_ = (ops.to_numpy(my) - ops.to_numpy(mx) @ self.coef_).astype(np.float32)
        else:
            self.intercept_ = np.zeros(t, np.float32)
        return self

    def _dual(self, n: int, p: int) -> bool:
        """Whether ``n`` samples of ``p`` features are solved in the dual (kernel) form."""
        return self.solver == "dual" or (self.solver == "auto" and n < p)

    def _per_fold_scores(self, ops, X, Y, folds, alphas: np.ndarray, chunk: int, xty, gram) -> np.ndarray:
        """(n_alphas, t) summed validation R², one decomposition per fold (primal, or dual from blocks of ``gram``)."""
        p, t = X.shape[1], Y.shape[1]
        scores = np.zeros((len(alphas), t), np.float64)
        for train, val in folds:
            xva_raw = ops.take(X, val)
            mxf = None
            if self._dual(len(train), p):
                basis, a = _dual_fold(ops, gram, train, val, center=self.fit_intercept)
            else:
                xtr, xva = ops.take(X, train), xva_raw
                if self.fit_intercept:
                    mxf = xtr.mean(0)
                    xtr, xva = xtr - mxf, xva - mxf
                basis = _decompose(ops, xtr, dual=False)
                a = basis.features(xva)  # (n_val, r)
            for start in range(0, t, chunk):
                sl = slice(start, min(t, start + chunk))
                yc = ops.cols(Y, sl)
                ytr, yva = ops.take(yc, train), ops.take(yc, val)
                if self.fit_intercept:
                    myf = ytr.mean(0)
                    ytr, yva = ytr - myf, yva - myf
                if basis.dual:
                    b = basis.project(ytr)
                else:
                    xty_tr = xty[:, sl] - xva_raw.T @ ops.take(yc, val)
                    if self.fit_intercept:
                        xty_tr = xty_tr - len(train) * (mxf[:, None] * myf[None, :])
                    b = basis.project_xty(xty_tr)
                scores[:, sl] += self._fold_r2(ops, basis, a, b, yva, alphas)
        return scores

    def _refit(self, ops, basis: _Basis, Y, xty, chunk: int) -> None:
        """``coef_`` on all samples with each target's alpha, from the decomposition of all (centred) samples."""
        p, t = basis.x.shape[1], Y.shape[1]
        coef = np.zeros((p, t), np.float32)
        alpha_t = ops.vector(self.alphas_)
        for start in range(0, t, chunk):
            sl = slice(start, min(t, start + chunk))
            b = basis.project(ops.cols(Y, sl)) if basis.dual else basis.project_xty(xty[:, sl])
            z = b * basis.inverse(alpha_t[None, sl], axis=0)
            coef[:, sl] = ops.to_numpy(basis.coef(z))
        self.coef_ = coef
        self.n_features_in_ = p

    @staticmethod
    def _xty(ops, X, Y, chunk: int):
        out = ops.zeros((X.shape[1], Y.shape[1]))
        for start in range(0, Y.shape[1], chunk):
            sl = slice(start, min(Y.shape[1], start + chunk))
            out[:, sl] = X.T @ ops.cols(Y, sl)
        return out

    @staticmethod
    def _auto_chunk(folds, p: int, n_alphas: int, t: int) -> int:
        n_val = max(len(v) for _, v in folds)
        per_target = 4 * (n_alphas * n_val + 2 * max(len(tr) for tr, _ in folds))
        return int(max(1, min(t, _MEMORY_BUDGET // per_target)))

    @staticmethod
    def _fold_r2(ops, basis: _Basis, a, b, yva, alphas: np.ndarray) -> np.ndarray:
        """(n_alphas, t) validation R² of one fold and one target chunk, all alphas through stacked products."""
        n_val, r = a.shape
        t = b.shape[1]
        ss = ((yva - yva.mean(0)) ** 2).sum(0)
        ss = ops.to_numpy(ss).astype(np.float64)
        out = np.empty((len(alphas), t), np.float64)
        # Alpha groups sized so the stacked (group · n_val, r) and (group · n_val, t) products fit the budget.
        group = int(max(1, min(len(alphas), _MEMORY_BUDGET // max(1, 4 * n_val * (r + t)))))
        for g0 in range(0, len(alphas), group):
            al = alphas[g0 : g0 + group]
            d = basis.inverse(ops.vector(al)[:, None], axis=1)  # (g, r)
            stacked = (a[None, :, :] * d[:, None, :]).reshape(len(al) * n_val, r)
            pred = (stacked @ b).reshape(len(al), n_val, t)
            sse = ops.sse(pred, yva[None])
            out[g0 : g0 + len(al)] = 1.0 - ops.to_numpy(sse).astype(np.float64) / np.maximum(ss, 1e-30)
        return out

    # --- using a fitted model ----------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("RidgeCV: call fit() (or load()) before predict()/score()")

    def predict(self, X) -> np.ndarray:
        """Predictions (n_samples, n_targets) float32 for X (n_samples, n_features)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[0]:
            raise ValueError(f"RidgeCV.predict: expected X of shape (n_samples, {self.coef_.shape[0]}), "
                             f"got {X.shape}")
        out = X @ self.coef_ + self.intercept_
        return out[:, 0] if getattr(self, "_ravel", False) else out

    def rescale_outputs(self, X, Y) -> np.ndarray:
        """Undo ridge's shrinkage of the prediction spread: scale each target's predictions about its training mean so
        their SD over the training samples ``X`` equals the SD of ``Y`` (brain-diffuser standardises its decoded
        features the same way, there with the test predictions' statistics; here only training data is used).

        Ridge predicts the conditional mean, pulled towards the mean target; decoded embeddings then all look alike
        and, when the targets share a large common pattern (CLIP-like embeddings do), correlation-based
        identification suffers. The scale is folded into ``coef_`` and ``intercept_``, so ``predict`` and saved models
        include it. Returns the per-target factors (n_targets,) float32 (1 where a prediction is constant).
        """
        self._check_fitted()
        Y = np.asarray(Y, np.float32)
        Y = Y[:, None] if Y.ndim == 1 else Y
        pred = np.asarray(X, np.float32) @ self.coef_ + self.intercept_
        sd_pred = pred.std(0)
        factor = np.where(sd_pred > 1e-12, Y.std(0) / np.maximum(sd_pred, 1e-12), 1.0).astype(np.float32)
        mean = Y.mean(0).astype(np.float32)
        # m + f·(Xc + b − m) = X(c·f) + (f·b + (1 − f)·m)
        self.coef_ = (self.coef_ * factor[None, :]).astype(np.float32)
        self.intercept_ = (factor * self.intercept_ + (1 - factor) * mean).astype(np.float32)
        self.output_scale_ = factor
        return factor

    def score(self, X, Y) -> np.ndarray:
        """Per-target R² (n_targets,) of the predictions for X against Y (as ``sklearn.metrics.r2_score``, raw)."""
        return r2_per_target(np.asarray(Y, np.float32), self.predict(X))

    # --- persistence -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into the folder ``path`` (replaced atomically)."""
        from safetensors.numpy import save

        from engine.atomic import atomic_write_bytes

        self._check_fitted()
        path = Path(path)
        meta = {"class": "RidgeCV", "schema_version": 1, "config": self.config.to_dict(),
                "ravel": bool(getattr(self, "_ravel", False))}
        tensors = {"coef": self.coef_, "intercept": self.intercept_, "alphas": self.alphas_,
                   "cv_scores": self.cv_scores_}
        with atomic_dir(path, overwrite=True) as tmp:
            (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
            atomic_write_bytes(tmp / "model.safetensors", data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RidgeCV":
        """Read a folder written by ``save``. Never unpickles."""
        from safetensors.numpy import load_file

        path = Path(path)
        cfg_file, w_file = path / "config.json", path / "model.safetensors"
        for f in (cfg_file, w_file):
            if not f.is_file():
                raise CheckpointError(f"{path}: not a saved RidgeCV model (missing {f.name})")
        meta = read_object(cfg_file)
        if meta.get("class") != "RidgeCV":
            raise CheckpointError(f"{cfg_file}: key 'class': expected 'RidgeCV', found {meta.get('class')!r}")
        cfg = dict(meta["config"])
        model = cls(**{k: v for k, v in cfg.items() if k in RidgeCVConfig.__dataclass_fields__})
        w = load_file(str(w_file))
        missing = {"coef", "intercept", "alphas", "cv_scores"} - set(w)
        if missing:
            raise CheckpointError(f"{w_file}: missing tensors {sorted(missing)}")
        model.coef_, model.intercept_ = w["coef"], w["intercept"]
        model.alphas_, model.cv_scores_ = w["alphas"], w["cv_scores"]
        model.n_features_in_ = int(model.coef_.shape[0])
        model._ravel = bool(meta.get("ravel", False))
        return model


def cross_validated_predictions(X, Y, alphas, cv=5) -> np.ndarray:
    """Out-of-fold ridge predictions (n_samples, n_targets) float32: each row predicted by a ridge (with intercept)
    fitted on the other folds, target t with its own ``alphas[t]`` (e.g. a fitted ``RidgeCV``'s ``alphas_``).

    What a second-level model fitted on the training set must see (stacking): in-sample predictions are too good.
    ``cv`` as in ``RidgeCV`` (contiguous K folds for an int). numpy, float64: meant for a few thousand samples.
    """
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    alphas = np.broadcast_to(np.asarray(alphas, np.float64).ravel(), (Y.shape[1],))
    out = np.zeros(Y.shape, np.float64)
    for train, val in _folds(cv, len(X)):
        mx, my = X[train].mean(0), Y[train].mean(0)
        xtr, ytr, xva = X[train] - mx, Y[train] - my, X[val] - mx
        if len(train) < X.shape[1]:  # dual: eigenbasis of the fold's Gram matrix
            s2, v = np.linalg.eigh(xtr @ xtr.T)
            a, b = (xva @ xtr.T) @ v, v.T @ ytr
        else:  # primal: eigenbasis of XᵀX
            s2, v = np.linalg.eigh(xtr.T @ xtr)
            a, b = xva @ v, v.T @ (xtr.T @ ytr)
        s2 = np.clip(s2, 0.0, None)[:, None]
        out[val] = a @ (b / (s2 + alphas[None, :])) + my
    return out.astype(np.float32)


def r2_per_target(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column, (n_targets,) float32; 0 variance gives 0 (not NaN)."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), 0.0)
    return r2.astype(np.float32)


def pearson_per_target(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation per column, (n_targets,) float32; constant columns give 0."""
    a = np.asarray(y_true, np.float64)
    b = np.asarray(y_pred, np.float64)
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1.0), 0.0).astype(np.float32)
