"""Vectorised block kernels for large betas blocks: float16 <-> float32 casts, min/max, multiply-add, shifted column
moments.

``shifted_moments`` is one fused native pass (``_kernels.c``, built at install where a C compiler exists, used on x86
CPUs with AVX + F16C); without it, ``shifted_into`` + ``column_moments`` do the same in five torch/numpy passes.

numpy converts float16 element by element (≈7 ns per value on our 2-core reference machine: 3 s for an NSD
subject); torch's vectorised kernels are about 5× faster for these casts. torch is a dependency of NeuroLens, imported
here only when a large block (>= 2**16 values) is first processed; smaller arrays, and machines without torch, use
numpy. Results are identical for casts (both round to nearest even) and agree to float32 rounding otherwise.
"""

from __future__ import annotations

import os

import numpy as np

try:  # the optional native extension (setup.py); NEUROLENS_NATIVE_KERNELS=0 turns it off, e.g. to compare paths
    from engine.data.readers import _kernels as _native
except ImportError:
    _native = None
if os.environ.get("NEUROLENS_NATIVE_KERNELS", "1") == "0" or (_native is not None and not _native.vector_path()):
    _native = None

# 1 M values per row block (4 MB of float32): the validation, cast and statistics passes over a block then run in the
# CPU cache instead of memory (measured 3-5x faster than 64 MB blocks), and the per-block overhead stays ~50 us
BLOCK_ELEMENTS = 1 << 20


def rows_per_block(n_cols: int) -> int:
    """Rows of ``n_cols`` values that make one block of about ``BLOCK_ELEMENTS`` values (at least one row)."""
    return max(1, BLOCK_ELEMENTS // max(1, n_cols))


_MIN_SIZE = 1 << 16  # below this, torch's dispatch costs more than numpy's scalar loop saves
_torch_mod = None


def _torch():
    global _torch_mod
    if _torch_mod is None:
        try:
            import torch

            _torch_mod = torch
        except ImportError:  # fall back to numpy
            _torch_mod = False
    return _torch_mod or None


def cast_into(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` with dtype conversion; float16 <-> float32 through torch when the block is large."""
    half = {np.dtype(np.float16), np.dtype(np.float32)}
    if (
        dst.shape != src.shape
        or dst.dtype == src.dtype
        or {dst.dtype, src.dtype} != half
        or dst.size < _MIN_SIZE
        or not (dst.flags.c_contiguous and src.flags.c_contiguous and dst.flags.writeable and src.flags.writeable)
    ):
        dst[...] = src
        return
    torch = _torch()
    if torch is None:
        dst[...] = src
        return
    torch.from_numpy(dst).copy_(torch.from_numpy(src))


def shifted_into(dst: np.ndarray, src: np.ndarray, shift: np.ndarray) -> None:
    """``dst[...] = src - shift`` into a float32 ``dst`` (``src`` float16 or float32, ``shift`` per column)."""
    torch = _torch() if _large(dst, src) and shift.flags.c_contiguous and src.dtype in (np.float16, np.float32) else None
    if torch is None:
        np.subtract(src, shift, out=dst, dtype=np.float32)
        return
    td = torch.from_numpy(dst)
    td.copy_(torch.from_numpy(src))  # a vectorised cast, then a pure float32 op: mixed-dtype ``sub`` is ~5x slower
    td.sub_(torch.from_numpy(np.asarray(shift, np.float32)))


def column_moments(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Σ rows, Σ rows²) of a float32 block as float64 (n_cols,) each; ``d`` is left holding its squares."""
    torch = _torch() if _large(d) and d.dtype == np.float32 else None
    if torch is None:
        s1 = d.sum(axis=0, dtype=np.float64)
        np.square(d, out=d)
        return s1, d.sum(axis=0, dtype=np.float64)
    td = torch.from_numpy(d)
    s1 = td.sum(0).double().numpy()
    td.square_()
    return s1, td.sum(0).double().numpy()


def native_kernels() -> bool:
    """Whether the fused native ``shifted_moments`` kernel is in use on this machine."""
    return _native is not None


def shifted_moments(block: np.ndarray, shift: np.ndarray, weight: np.ndarray, s1: np.ndarray,
                    s2: np.ndarray) -> float | None:
    """``s1 += Σ_r w_r·d_r``, ``s2 += Σ_r w_r·d_r²`` with ``d = block - shift``, in one native pass.

    ``block`` (rows, cols) float16/float32, ``shift`` (cols,) float32, ``weight`` (rows,) float32 (1 = counted,
    0 = not), ``s1``/``s2`` (cols,) float64, updated in place. A NaN or Inf anywhere in ``block``, counted row or not,
    leaves some ``s1``/``s2`` entries non-finite. Returns max |value| for a float32 block (0.0 for float16, whose
    range is bounded), or None, having done nothing, where the native kernel is unavailable or the arrays are not
    C-contiguous: the caller then uses ``shifted_into`` + ``column_moments``.
    """
    if _native is None or block.dtype not in (np.float16, np.float32) or not block.flags.c_contiguous:
        return None
    return _native.shifted_moments(block, shift, weight, s1, s2)


def finite_max_abs(block: np.ndarray) -> float | None:
    """One native pass over a (rows, cols) float16/float32 block: NaN if it holds a NaN or Inf, else its max |value|
    (0.0 for float16, whose range is bounded); None where the native kernel is unavailable."""
    if block.ndim != 2:
        return None
    cols = block.shape[1]
    s1, s2 = np.zeros(cols), np.zeros(cols)
    m = shifted_moments(block, np.zeros(cols, np.float32), np.zeros(len(block), np.float32), s1, s2)
    if m is None:
        return None
    return m if np.isfinite(s1).all() else float("nan")  # 0 * (NaN or Inf) is NaN: s2 carries nothing more


def _large(*arrays: np.ndarray) -> bool:
    return all(a.size >= _MIN_SIZE and a.flags.c_contiguous and a.flags.writeable for a in arrays)


def minmax(a: np.ndarray) -> tuple[float, float]:
    """(min, max) of an array in one pass (NaN propagates, so a NaN anywhere makes both NaN)."""
    torch = _torch() if _large(a) else None
    if torch is None or a.dtype not in (np.float16, np.float32, np.float64):
        return float(a.min()), float(a.max())
    lo, hi = torch.aminmax(torch.from_numpy(a))
    return float(lo), float(hi)


def affine_into(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, scratch: np.ndarray) -> None:
    """``x[...] = x * scale + bias`` in place (``x`` float16 or float32), computed in float32 in ``scratch``.

    ``scale``/``bias`` are float32 and broadcast over the rows of ``x`` (per-voxel (n_voxels,) or per-row (rows,
    n_voxels)). float16 blocks: one in-place fused pass; otherwise a cast to float32, one fused multiply-add, and a
    cast back.
    """
    torch = _torch() if _large(x, scratch) and scale.flags.c_contiguous and bias.flags.c_contiguous else None
    if torch is None:
        cast_into(scratch, x)
        scratch *= scale
        scratch += bias
        cast_into(x, scratch)
        return
    tx, ts = torch.from_numpy(x), torch.from_numpy(scratch)
    if x.dtype == np.float16:
        # one in-place pass: torch computes b + x·k in float32 per element and rounds once to float16; k and b are
        # float16 too, which adds at most about one float16 step: the precision the stored betas already have
        torch.addcmul(torch.from_numpy(bias).half(), tx, torch.from_numpy(scale).half(), out=tx)
        return
    if x.dtype != np.float32:
        ts.copy_(tx)  # mixed-dtype arithmetic is slow in torch; cast first, then a pure float32 fused pass
        src = ts
    else:
        src = tx
    torch.addcmul(torch.from_numpy(bias), src, torch.from_numpy(scale), out=ts)
    tx.copy_(ts)

