"""``NormalizedBetas``: betas read through a per-voxel affine ``x * scale + bias`` (a z-score), applied as rows are read.

Why: writing the z-score back into a loaded 30,000 × 15,724 float16 matrix is one more full read-modify-write pass
over 0.9 GB (about as long as reading the file from the page cache), while every consumer reads the betas by rows
(training batches, ridge blocks, exports, the voxel inspector) and converts them to float32 anyway. Applying the
affine there costs one multiply-add per value read and leaves the loaded matrix untouched, so z-scoring keeps the
memory of one float16 copy.

The view supports what ``Subject`` consumers use: ``.shape``, ``.dtype``, ``.ndim``, ``len()``, ``[rows]``,
``[rows, cols]`` (rows: int, slice, int or bool array; cols: int, slice, int or bool array), ``np.asarray``,
``astype`` and ``load()``. Values come back in the base dtype, like the eager z-score they replace.
"""

from __future__ import annotations

import numpy as np

from engine.data.readers.kernels import affine_into, rows_per_block
from engine.data.readers.lazy import BetasArrayLike, row_positions


class NormalizedBetas(BetasArrayLike):
    """``base`` (n_trials, n_voxels) read as ``base * scale[g] + bias[g]``, ``g`` the row's statistics group.

    Parameters
    ----------
    base : (n_trials, n_voxels) float16/float32 array or array-like (e.g. ``LazyBetas``)
    scale, bias : (n_groups, n_voxels) float32
        Per group and voxel: ``1 / std`` and ``-mean / std`` for a z-score.
    row_group : (n_trials,) int, optional
        Each row's group (``session`` z-scoring); None: every row uses group 0.
    """

    def __init__(self, base, scale: np.ndarray, bias: np.ndarray, row_group: np.ndarray | None = None):
        self.base = base
        self.scale = np.ascontiguousarray(np.atleast_2d(scale), np.float32)
        self.bias = np.ascontiguousarray(np.atleast_2d(bias), np.float32)
        self.row_group = None if row_group is None else np.asarray(row_group, np.int64).reshape(-1)
        self.shape = tuple(int(x) for x in base.shape)
        self.dtype = np.dtype(base.dtype)
        if self.scale.shape != self.bias.shape or self.scale.shape[1] != self.shape[1]:
            raise ValueError(f"scale/bias {self.scale.shape}/{self.bias.shape} do not fit betas {self.shape}")
        if self.row_group is not None and self.row_group.shape != (self.shape[0],):
            raise ValueError(f"row_group has {self.row_group.shape} entries for {self.shape[0]} rows")

    def _raw(self, pos: np.ndarray, cols) -> np.ndarray:
        """A writable copy of ``base`` at rows ``pos`` (and ``cols``), 2-D (rows, selected voxels)."""
        if cols is None:
            blk = self.base[pos]
        elif isinstance(self.base, np.ndarray) and not isinstance(cols, (int, np.integer, slice)):
            blk = self.base[np.ix_(pos, np.arange(self.shape[1])[cols])]
        else:
            blk = self.base[pos, cols]
        # rows are always selected by position (fancy indexing) and lazy readers return fresh arrays, so ``blk`` is
        # already a copy the affine may overwrite; a second copy would double the cost of every training batch
        blk = np.asarray(blk, dtype=self.dtype)
        if not blk.flags.writeable or (isinstance(self.base, np.ndarray) and np.may_share_memory(blk, self.base)):
            blk = blk.copy()
        return blk.reshape(len(pos), -1)

    def _apply(self, blk: np.ndarray, pos: np.ndarray, cols, scratch: np.ndarray | None = None) -> None:
        """``blk = blk * scale + bias`` in place, with the rows' groups and the selected columns (``scratch``: a
        float32 array of ``blk``'s shape to reuse)."""
        scale = self.scale if cols is None else self.scale[:, cols].reshape(self.scale.shape[0], -1)
        bias = self.bias if cols is None else self.bias[:, cols].reshape(self.bias.shape[0], -1)
        groups = np.zeros(len(pos), np.int64) if self.row_group is None else self.row_group[pos]
        if scratch is None or scratch.shape != blk.shape:
            scratch = np.empty(blk.shape, np.float32)
        for g in np.unique(groups):
            rows = groups == g
            k, b = np.ascontiguousarray(scale[g]), np.ascontiguousarray(bias[g])
            if rows.all():
                affine_into(blk, k, b, scratch)
            else:  # a selection spanning sessions: one group at a time
                part = np.ascontiguousarray(blk[rows])
                affine_into(part, k, b, np.empty(part.shape, np.float32))
                blk[rows] = part

    def __getitem__(self, sel):
        cols = None
        if isinstance(sel, tuple):
            if len(sel) > 2:
                raise IndexError(f"too many indices for a 2-D array: {len(sel)}")
            sel, cols = sel if len(sel) == 2 else (sel[0], None)
            if isinstance(cols, slice) and cols == slice(None):
                cols = None
        pos, scalar_row = row_positions(sel, self.shape[0])
        out = self._raw(pos, cols)
        if out.size:
            self._apply(out, pos, cols)
        if isinstance(cols, (int, np.integer)):
            out = out[:, 0]
        return out[0] if scalar_row else out

    def load(self, out: np.ndarray | None = None, on_block=None) -> np.ndarray:
        """Every row, normalised, into a new (or the given) array of ``self.dtype``, in row blocks.

        ``on_block(block, start)`` sees each normalised block in ``self.dtype``.
        """
        n, v = self.shape
        out = np.empty((n, v), self.dtype) if out is None else out
        step = rows_per_block(v)
        scratch = np.empty((min(step, n), v), np.float32)
        for s in range(0, n, step):
            pos = np.arange(s, min(n, s + step))
            blk = out[s : s + len(pos)]
            blk[...] = self.base[s : s + len(pos)]
            self._apply(blk, pos, None, scratch[: len(pos)])
            if on_block is not None:
                on_block(blk, s)
        return out

    def __repr__(self) -> str:
        groups = 1 if self.row_group is None else self.scale.shape[0]
        return f"NormalizedBetas(shape={self.shape}, dtype={self.dtype}, groups={groups}, base={type(self.base).__name__})"
