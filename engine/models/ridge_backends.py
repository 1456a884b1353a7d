"""The handful of array operations the ridge solver (``engine.models.ridge``) needs, for numpy and for torch (CPU or
CUDA)."""

from __future__ import annotations

import numpy as np

from engine.errors import ConfigError

THREADED_EIGH_SIZE = 1024  # see NumpyOps.eigh
BACKENDS = ("numpy", "torch")


class NumpyOps:
    name = "numpy"

    def asarray(self, a):
        return np.ascontiguousarray(np.asarray(a, dtype=np.float32))

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.float32)

    def eigh(self, m):
        # LAPACK's divide-and-conquer (syevd) in both cases. From THREADED_EIGH_SIZE up, through scipy, whose threaded
        # LAPACK is ~2x faster than numpy.linalg.eigh on 2 cores (NSD-shaped dual CV: 5.7 -> 2.6 s per 4,000² eigh);
        # smaller matrices take milliseconds either way and keep numpy's results. Not torch's: its float32 CPU eigh
        # is ~1.3x faster but its small eigenvalues are ~30x less accurate (dual CV scores off by 6e-4, not 2e-5).
        if m.shape[0] >= THREADED_EIGH_SIZE:
            from scipy.linalg import eigh

            s, v = eigh(np.array(m, dtype=np.float32, order="F"), driver="evd", overwrite_a=True, check_finite=False)
        else:
            s, v = np.linalg.eigh(m)
        return s.astype(np.float32, copy=False), v.astype(np.float32, copy=False)

    def gram(self, x):
        """``x @ x.T`` with the symmetric rank-k product (half the flops of a general product)."""
        from scipy.linalg.blas import ssyrk

        g = ssyrk(1.0, np.asarray(x, np.float32).T, trans=1)  # upper triangle of xᵀᵀ xᵀ
        upper = np.triu(g)
        return np.ascontiguousarray(upper + np.triu(upper, 1).T)

    def gram_factor(self, a):
        """Cholesky factor of ``a @ a.T`` (for ``cho_solve``)."""
        from scipy.linalg import LinAlgError, cho_factor
        from scipy.linalg.blas import ssyrk

        m = ssyrk(1.0, a.T, trans=1)  # upper triangle only, which is all cho_factor(lower=False) reads
        try:
            return cho_factor(m, lower=False, check_finite=False)
        except LinAlgError:  # not positive definite to float32 precision: a relative jitter, in float64
            m = np.asarray(a, np.float64) @ np.asarray(a, np.float64).T
            return cho_factor(m + np.eye(len(m)) * (len(m) * 1e-7 * float(np.diag(m).max())), lower=False)

    def cho_solve(self, factor, b):
        from scipy.linalg import cho_solve

        return cho_solve(factor, b, check_finite=False).astype(np.float32, copy=False)

    def take(self, a, idx):
        return a[idx]

    def vector(self, values):
        return np.asarray(values, dtype=np.float32)

    def cols(self, a, sl):
        return np.ascontiguousarray(a[:, sl])

    def zeros(self, shape):
        return np.zeros(shape, np.float32)

    def block(self, a, rows, cols):
        return np.ascontiguousarray(a[np.ix_(rows, cols)])

    def sse(self, pred, y):
        """Sum over axis 1 of (pred - y)², overwriting ``pred`` (no temporaries of its size)."""
        np.subtract(pred, y, out=pred)
        np.multiply(pred, pred, out=pred)
        return pred.sum(1)


class TorchOps:
    name = "torch"

    def __init__(self, device: str | None) -> None:
        import torch

        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)

    def asarray(self, a):
        t = self.torch
        if isinstance(a, t.Tensor):
            return a.to(device=self.device, dtype=t.float32)
        return t.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().to("cpu", self.torch.float32).numpy()

    def eigh(self, m):
        s, v = self.torch.linalg.eigh(m)
        return s, v

    def gram(self, x):
        return x @ x.T

    def gram_factor(self, a):
        """Cholesky factor of ``a @ a.T`` (for ``cho_solve``)."""
        t = self.torch
        factor, info = t.linalg.cholesky_ex(a @ a.T)
        if int(info) != 0:  # not positive definite to float32 precision: a relative jitter, in float64
            a = a.double()
            m = a @ a.T
            factor = t.linalg.cholesky(m + t.eye(len(m), dtype=m.dtype, device=m.device)
                                       * (len(m) * 1e-7 * float(m.diagonal().max())))
        return factor

    def cho_solve(self, factor, b):
        return self.torch.cholesky_solve(b.to(factor.dtype), factor).float()

    def take(self, a, idx):
        return a[self.torch.as_tensor(idx, device=a.device)]

    def vector(self, values):
        return self.torch.as_tensor(np.asarray(values, np.float32), device=self.device)

    def cols(self, a, sl):
        return a[:, sl].contiguous()

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.float32, device=self.device)

    def block(self, a, rows, cols):
        t = self.torch
        return a[t.as_tensor(rows, device=a.device)][:, t.as_tensor(cols, device=a.device)].contiguous()

    def sse(self, pred, y):
        return pred.sub_(y).square_().sum(1)


def array_ops(backend: str, device: str | None):
    """The operations of ``backend`` (``numpy``: CPU only; ``torch``: ``device``)."""
    if backend == "numpy":
        if device not in (None, "cpu"):
            raise ConfigError(f"RidgeCV: backend 'numpy' runs on the CPU only, got device={device!r}; "
                              "use backend='torch'")
        return NumpyOps()
    if backend == "torch":
        return TorchOps(device)
    raise ConfigError(f"RidgeCV: backend must be one of {BACKENDS}, got {backend!r}")
