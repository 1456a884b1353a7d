"""Array-like views over HDF5 datasets that read rows only when indexed (NSD betas and the 73k COCO images).

``LazyBetas`` reads rows of a (trials, voxels) float dataset and returns float16/float32; ``load()`` reads them all
once, in row blocks, into one float16 array (never a float64 copy). ``LazyImages`` turns rows of an (N, 3, H, W)
float image dataset in [0, 1] into (H, W, 3) uint8 on indexing, so the 22 GB NSD image file is never loaded whole.
Both support ``.shape``, ``.dtype``, ``.ndim``, ``len()`` and ``[int | slice | int array]``, which is all
``Subject`` consumers and ``write_subject`` use. Every block read is checked for NaN/Inf and truncation.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from engine.data.readers.kernels import cast_into, finite_max_abs, minmax, rows_per_block
from engine.data.readers.checks import oneline, h5_dataset, h5_read, open_h5
from engine.errors import SubjectFormatError

_F16_MAX = float(np.finfo(np.float16).max)


def row_positions(sel, n: int) -> tuple[np.ndarray, bool]:
    """Normalise a row selector to an int array of positions; the flag says whether a scalar was asked for."""
    if isinstance(sel, (int, np.integer)):
        i = int(sel)
        if i < -n or i >= n:
            raise IndexError(f"index {i} out of range for {n} rows")
        return np.array([i % n]), True
    if isinstance(sel, slice):
        return np.arange(n)[sel], False
    a = np.asarray(sel)
    if a.dtype == np.bool_:
        if a.shape != (n,):
            raise IndexError(f"boolean index of shape {a.shape} for {n} rows")
        return np.flatnonzero(a), False
    if not np.issubdtype(a.dtype, np.integer):
        raise IndexError(f"rows must be indexed by int, slice or int array, got {a.dtype}")
    if a.size and (a.min() < -n or a.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return a.reshape(-1) % max(n, 1), False


def _raw_offset(ds) -> int | None:
    """Byte offset of a dataset stored as one contiguous, unfiltered block in native byte order, else None."""
    try:
        if ds.chunks is not None or ds.compression is not None or not ds.dtype.isnative:
            return None
        off = ds.id.get_offset()
    except (AttributeError, OSError, RuntimeError, ValueError):
        return None
    return None if off is None else int(off)


def _pread_into(raw, dst: np.ndarray, offset: int, path: Path, key: str) -> None:
    """Fill the contiguous array ``dst`` from the unbuffered file ``raw`` at ``offset`` (``readinto`` releases the
    GIL on every platform); a short read means a truncated file."""
    view = memoryview(dst.reshape(-1).view(np.uint8))
    raw.seek(offset)
    done = 0
    while done < len(view):
        got = raw.readinto(view[done:])
        if not got:
            raise SubjectFormatError(path, "cannot read the data block, truncated or corrupt (the file ends "
                                     f"{len(view) - done} bytes early)", key=key)
        done += got


def _pipelined(n: int, step: int, read, process) -> None:
    """``process(read(k, s, e), s, e)`` for every block ``k`` of ``step`` rows, in order, reading block k+1 in this
    thread while a helper thread processes block k. At most two blocks are in flight, so ``read`` may reuse block
    k-2's buffer. The first exception, from either side, is raised here once both threads have stopped.

    The hand-off is two C-implemented ``SimpleQueue`` s (~2 us a block; a ``ThreadPoolExecutor`` future cost ~30 us,
    15 ms over an NSD subject's 455 blocks, a fifth of the file read itself).
    """
    todo: queue.SimpleQueue = queue.SimpleQueue()
    done: queue.SimpleQueue = queue.SimpleQueue()
    failed: list[BaseException] = []

    def work() -> None:
        while (item := todo.get()) is not None:
            if not failed:
                try:
                    process(*item)
                except BaseException as err:  # noqa: BLE001 - handed to the reading thread, which raises it
                    failed.append(err)
            done.put(True)

    helper = threading.Thread(target=work, name="betas-load", daemon=True)
    helper.start()
    in_flight = 0
    try:
        for k, s in enumerate(range(0, n, step)):
            if in_flight == 2:  # block k-2 (whose buffer ``read`` may reuse) must be processed first
                done.get()
                in_flight -= 1
            if failed:
                break
            e = min(n, s + step)
            todo.put((read(k, s, e), s, e))
            in_flight += 1
    finally:
        todo.put(None)
        helper.join()
    if failed:
        raise failed[0]


def _read_rows(ds, rows: np.ndarray, path: Path, key: str, cols=None) -> np.ndarray:
    """``ds[rows]`` (or ``ds[rows, cols]`` for an int or slice ``cols``, read by HDF5 itself: one voxel's column
    costs its own bytes, not the whole matrix) for any row order: h5py needs strictly increasing unique indices, so
    sort, read, then reorder."""
    if rows.size == 0:
        return np.zeros((0,) + ds.shape[1:], ds.dtype)[(slice(None),) + ((cols,) if cols is not None else ())]
    uniq, inv = np.unique(rows, return_inverse=True)
    if uniq.size == uniq[-1] - uniq[0] + 1:  # contiguous: a slice read is much faster than a point selection
        sel = np.s_[int(uniq[0]) : int(uniq[-1]) + 1]
    else:
        sel = uniq
    block = h5_read(ds, path, key, sel if cols is None else (sel, cols))
    return block if np.array_equal(uniq, rows) else block[inv.reshape(-1)]


def _column_selector(rest: tuple, n_cols: int):
    """The column part of an index as HDF5 can read it (an int or a forward slice), else None (numpy selects)."""
    if len(rest) != 1:
        return None
    c = rest[0]
    if isinstance(c, (int, np.integer)):
        if not -n_cols <= int(c) < n_cols:
            raise IndexError(f"index {int(c)} out of range for {n_cols} columns")
        return int(c) % n_cols
    if isinstance(c, slice) and (c.step is None or c.step > 0):
        start, stop, step = c.indices(n_cols)
        return slice(start, max(start, stop), step)
    return None


class BetasArrayLike:
    """What a (n_trials, n_voxels) betas stand-in shares with an ndarray, given ``shape``, ``dtype`` and ``load()``:
    ``len()``, ``size``, ``nbytes``, ``np.asarray`` and ``astype`` (both load every row)."""

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __array__(self, dtype=None, copy=None):
        a = self.load()
        return a if dtype is None else a.astype(dtype, copy=False)

    def astype(self, dtype, copy=True) -> np.ndarray:
        """All rows in memory as ``dtype`` (like ``ndarray.astype``; loads the whole matrix)."""
        return np.asarray(self, dtype=dtype)


class LazyBetas(BetasArrayLike):
    """(n_trials, n_voxels) betas backed by an HDF5 dataset, optionally a subset of its rows.

    Parameters
    ----------
    path : Path
        The HDF5 file.
    key : str
        The dataset, e.g. ``"betas"``.
    rows : (n_trials,) int array, optional
        Dataset rows in trial order; all rows when omitted.
    dtype : float16 or float32
        What indexing and ``load()`` return.
    """

    def __init__(self, path: Path, key: str, rows: np.ndarray | None = None, dtype=np.float16, block_rows: int | None = None):
        self.path = Path(path)
        self.key = key
        with open_h5(self.path) as f:
            ds = h5_dataset(f, key, self.path)
            n_rows, n_vox = int(ds.shape[0]), int(ds.shape[1])
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.dtype = np.dtype(dtype)
        self.shape = (n_rows if self.rows is None else len(self.rows), n_vox)
        self.block_rows = block_rows or rows_per_block(n_vox)

    def _dataset_rows(self, pos: np.ndarray) -> np.ndarray:
        return pos if self.rows is None else self.rows[pos]

    def _check_block(self, block: np.ndarray, first_row: int, rows: np.ndarray | None = None) -> None:
        m = finite_max_abs(block)  # one fused native pass where available; the passes below name what is wrong
        if m is not None and m == m and not (self.dtype == np.float16 and m > _F16_MAX):
            return
        lo, hi = minmax(block)  # NaN propagates: one reduction instead of an isfinite pass
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            row = int(rows[bad]) if rows is not None else first_row + bad
            raise SubjectFormatError(self.path, f"row {row} holds NaN or Inf", key=self.key, expected="finite values",
                                     found="NaN/Inf")
        if self.dtype == np.float16 and max(-lo, hi) > _F16_MAX:
            raise SubjectFormatError(self.path, "values too large for float16", key=self.key,
                                     expected=f"|value| <= {_F16_MAX:g}", found=f"[{lo:.4g}, {hi:.4g}]")

    def __getitem__(self, sel):
        rest = ()
        if isinstance(sel, tuple):
            sel, rest = sel[0], sel[1:]
        pos, scalar = row_positions(sel, self.shape[0])
        rows = self._dataset_rows(pos)
        cols = _column_selector(rest, self.shape[1])
        with open_h5(self.path) as f:
            ds = h5_dataset(f, self.key, self.path)
            block = _read_rows(ds, rows, self.path, self.key, cols)
        if block.size:
            self._check_block(block.reshape(len(rows), -1), 0, rows)
        out = block.astype(self.dtype, copy=False)
        if cols is not None:  # already selected by HDF5
            return out[0] if scalar else out
        out = out[0] if scalar else out
        return out[(slice(None),) * (0 if scalar else 1) + rest] if rest else out

    def load(self, out: np.ndarray | None = None, on_block=None) -> np.ndarray:
        """Read every row once, in blocks, into a new ``self.dtype`` array (no float64, one block buffer at a time).

        ``on_block(block, start)``, if given, sees each block (rows ``start:start+len(block)``, in the file's dtype)
        once: preprocessing uses it to gather statistics in the same pass over the file. When it returns a number, it
        has established that the block holds only finite values and the number is the block's max |value| (the fused
        statistics kernel does this in its one pass); the block's own validation pass is then skipped unless that
        maximum exceeds the float16 range.

        Reading and processing overlap: the calling thread reads block k+1 while a helper thread hands block k to
        ``on_block``, validates it (NaN/Inf, float16 range) unless ``on_block`` certified it, and casts it into
        ``out``. A contiguous, unfiltered dataset is read with plain file reads at its offset, which release the GIL,
        so both cores work.
        """
        n, v = self.shape
        out = np.empty((n, v), self.dtype) if out is None else out
        if n == 0:
            return out
        with open_h5(self.path) as f:
            ds = h5_dataset(f, self.key, self.path)
            contiguous_all = self.rows is None or np.array_equal(self.rows, np.arange(self.rows[0], self.rows[0] + n))
            start = 0 if self.rows is None else int(self.rows[0])
            offset = _raw_offset(ds) if contiguous_all else None
            in_place = contiguous_all and np.dtype(ds.dtype) == self.dtype  # read straight into ``out``
            step = self.block_rows
            bufs = [] if in_place else [np.empty((min(step, n), v), ds.dtype) for _ in range(2)]
            raw = open(self.path, "rb", buffering=0) if offset is not None else None

            def read(k: int, s: int, e: int) -> np.ndarray:
                dst = out[s:e] if in_place else bufs[k % 2][: e - s]
                if not contiguous_all:
                    dst[...] = _read_rows(ds, self.rows[s:e], self.path, self.key)
                elif offset is not None:
                    _pread_into(raw, dst, offset + (start + s) * v * dst.itemsize, self.path, self.key)
                else:
                    try:
                        ds.read_direct(dst, np.s_[start + s : start + e], np.s_[0 : e - s])
                    except (OSError, ValueError, TypeError, RuntimeError) as err:
                        raise SubjectFormatError(self.path, f"cannot read the data block, truncated or corrupt "
                                                 f"({oneline(err)})", key=self.key) from err
                return dst

            def process(blk: np.ndarray, s: int, e: int) -> None:
                maxabs = on_block(blk, s) if on_block is not None else None
                if maxabs is None or (self.dtype == np.float16 and maxabs > _F16_MAX):
                    self._check_block(blk, s, None if self.rows is None else self.rows[s:e])
                if not in_place:
                    cast_into(out[s:e], blk)

            try:
                _pipelined(n, step, read, process)
            finally:
                if raw is not None:
                    raw.close()
        return out

    def __repr__(self) -> str:
        return f"LazyBetas({str(self.path)!r}, {self.key!r}, shape={self.shape}, dtype={self.dtype})"


class LazyImages:
    """(n_images, H, W, 3) uint8 view of rows of an (N, 3, H, W) float dataset in [0, 1] (NSD ``images``).

    Parameters
    ----------
    path : Path
    key : str
    rows : (n_images,) int array
        Dataset rows (73KID − 1) in the subject's image order (ascending 73KID).
    """

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, path: Path, key: str, rows: np.ndarray):
        self.path = Path(path)
        self.key = key
        self.rows = np.asarray(rows, dtype=np.int64)
        with open_h5(self.path) as f:
            ds = h5_dataset(f, key, self.path)
            if len(ds.shape) != 4 or ds.shape[1] != 3:
                raise SubjectFormatError(self.path, "not an image stack", key=key, expected="(N, 3, H, W) float images",
                                         found=f"shape {tuple(ds.shape)}")
            if not np.issubdtype(ds.dtype, np.floating):
                raise SubjectFormatError(self.path, "not an image stack", key=key, expected="float16 values in [0, 1]",
                                         found=str(ds.dtype))
            self._n_source = int(ds.shape[0])
            h, w = int(ds.shape[2]), int(ds.shape[3])
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= self._n_source):
            bad = int(self.rows[(self.rows < 0) | (self.rows >= self._n_source)][0])
            raise SubjectFormatError(self.path, "trial points at a missing image", key=key,
                                     expected=f"0 <= image index < {self._n_source}", found=bad)
        self.shape = (len(self.rows), h, w, 3)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sel):
        rest = ()
        if isinstance(sel, tuple):
            sel, rest = sel[0], sel[1:]
        pos, scalar = row_positions(sel, self.shape[0])
        with open_h5(self.path) as f:
            ds = h5_dataset(f, self.key, self.path)
            block = _read_rows(ds, self.rows[pos], self.path, self.key)
        img = np.moveaxis(block, 1, -1).astype(np.float32)
        if img.size and not np.isfinite(img).all():
            raise SubjectFormatError(self.path, "image holds NaN or Inf", key=self.key, expected="values in [0, 1]",
                                     found="NaN/Inf")
        out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        out = out[0] if scalar else out
        return out[(slice(None),) * (0 if scalar else 1) + rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.uint8)
        for s in range(0, self.shape[0], 256):
            out[s : s + 256] = self[s : s + 256]
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy=True) -> np.ndarray:
        """All images in memory as ``dtype`` (loads every image: avoid for the full NSD set)."""
        return np.asarray(self, dtype=dtype)

    def __repr__(self) -> str:
        return f"LazyImages({str(self.path)!r}, {self.key!r}, shape={self.shape})"
