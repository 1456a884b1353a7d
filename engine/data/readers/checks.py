"""Checks shared by the dataset readers: each failure is a ``SubjectFormatError`` naming file, key, expected, found.

Readers call these instead of trusting what a file says: keys present, shapes and dtypes as the layout requires,
finite rows, trial indices that point at existing images, ROI masks that are non-empty and the right length, images
that are images. Opening helpers turn library errors (h5py, zipfile, scipy, nibabel) into the same typed error.
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import SubjectFormatError


def describe(a) -> str:
    """Short text for an array-like: ``"2-D float32 array (750, 200)"``."""
    if a is None:
        return "nothing"
    if not hasattr(a, "shape"):
        return type(a).__name__
    return f"{len(a.shape)}-D {np.dtype(a.dtype)} array {tuple(int(s) for s in a.shape)}"


def require_file(path: Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise SubjectFormatError(path, f"missing {what}")
    if not path.is_file():
        raise SubjectFormatError(path, f"not a {what}", expected="a file", found="a folder")
    return path


def require_dir(path: Path, what: str = "folder") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise SubjectFormatError(path, f"missing {what}", expected="a folder", found="nothing" if not path.exists() else "a file")
    return path


# --- opening files ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def open_h5(path: Path) -> Iterator:
    """Open an HDF5 file read-only; a missing, truncated or non-HDF5 file becomes ``SubjectFormatError``."""
    import h5py

    require_file(path, "HDF5 file")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise SubjectFormatError(path, f"not a readable HDF5 file, truncated or corrupt ({_first_line(e)})") from e
    try:
        yield f
    finally:
        f.close()


def h5_dataset(f, key: str, path: Path):
    """The dataset ``key`` of an open h5py file, or a clear error listing what the file holds."""
    import h5py

    try:
        obj = f.get(key)
        names = sorted(f.keys())[:12] if obj is None or not isinstance(obj, h5py.Dataset) else None
    except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
        raise SubjectFormatError(path, f"corrupt HDF5 structure ({oneline(e)})", key=key) from e
    if names is not None:
        raise SubjectFormatError(path, "missing dataset", key=key, expected=f"an HDF5 dataset '{key}'", found=f"keys {names}")
    return obj


def h5_read(ds, path: Path, key: str, sel=()):
    """Read ``ds[sel]``, turning an I/O error inside the data block (truncation, bad chunk) into a clear error."""
    try:
        return ds[sel]
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        raise SubjectFormatError(path, f"cannot read the data block, truncated or corrupt ({_first_line(e)})",
                                 key=key) from e


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickle); truncated zips, bad members and object arrays give clear errors."""
    require_file(path, ".npz file")
    if not zipfile.is_zipfile(path):
        raise SubjectFormatError(path, "not an .npz archive (truncated or another kind of file)",
                                 expected="a zip archive of .npy arrays", found="no zip directory")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                member = k if k in z.zip.namelist() else f"{k}.npy"
                with z.zip.open(member) as fh:
                    _check_npy_header(fh, path, k)
                out[k] = z[k]
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise SubjectFormatError(path, "holds pickled object arrays, which NeuroLens never loads",
                                     expected="numeric arrays", found="object arrays") from e
        raise SubjectFormatError(path, f"unreadable .npz ({_first_line(e)})") from e
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, zipfile.LargeZipFile, NotImplementedError, zlib.error,
            struct.error, RuntimeError, UnicodeDecodeError) as e:
        raise SubjectFormatError(path, f"unreadable or truncated .npz ({type(e).__name__}: {_first_line(e)})") from e
    return out


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    require_file(path, ".npy file")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise SubjectFormatError(path, "not a .npy array file", expected="the NUMPY header", found=repr(magic))
    if not mmap:
        with open(path, "rb") as fh:
            _check_npy_header(fh, path, None)
    try:
        a = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise SubjectFormatError(path, "holds a pickled object array, which NeuroLens never loads",
                                     expected="a numeric array", found="an object array") from e
        raise SubjectFormatError(path, f"unreadable or truncated .npy ({_first_line(e)})") from e
    except (OSError, EOFError) as e:
        raise SubjectFormatError(path, f"unreadable or truncated .npy ({_first_line(e)})") from e
    if not isinstance(a, np.ndarray):
        raise SubjectFormatError(path, expected="one array", found=type(a).__name__)
    return a


def oneline(e: BaseException) -> str:
    """First line of an exception's text (library messages can span lines; the CLI prints one)."""
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


_first_line = oneline


# --- sizes declared by headers, checked before reading -----------------------------------------------------------------
MAX_IMAGE_PIXELS = 64_000_000  # 8000 × 8000: far above any stimulus; a PNG that declares more is a decompression bomb


def available_memory() -> int | None:
    """Bytes of memory this process can still allocate without swapping (``MemAvailable``); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform
        return None


def check_declared_size(path: Path, key: str | None, shape, dtype) -> None:
    """Refuse an array whose header declares more bytes than the memory available (checked before reading it)."""
    try:
        itemsize = dtype if isinstance(dtype, int) else np.dtype(dtype).itemsize  # an int: bytes per element
        n = int(np.prod([int(d) for d in shape], dtype=object)) * itemsize
    except (TypeError, ValueError):
        return
    avail = available_memory()
    if avail is not None and n > avail:
        from engine.atomic import human_bytes

        raise SubjectFormatError(path, "array too large to read", key=key,
                                 expected=f"at most {human_bytes(avail)} (the memory available)",
                                 found=f"{human_bytes(n)} declared, shape {tuple(int(d) for d in shape)}")


def _check_npy_header(fh, path: Path, key: str | None) -> None:
    """Read the ``.npy`` header at ``fh`` and check the size it declares (no data read)."""
    try:
        version = np.lib.format.read_magic(fh)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(fh))
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise SubjectFormatError(path, f"unreadable .npy header ({_first_line(e)})", key=key) from e
    check_declared_size(path, key, shape, dtype)


def check_image_size(path: Path, width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    if int(width) * int(height) > max_pixels:
        raise SubjectFormatError(path, "image too large (a decompression bomb?)",
                                 expected=f"at most {max_pixels:,} pixels", found=f"{width} × {height} pixels")


def read_image_rgb(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8; its declared size is checked before its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    require_file(path, "image file")
    try:
        with Image.open(path) as im:
            check_image_size(path, *im.size, max_pixels=max_pixels)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except SubjectFormatError:
        raise
    except Image.DecompressionBombError as e:
        raise SubjectFormatError(path, "image too large (a decompression bomb?)", expected=f"at most {max_pixels:,} pixels",
                                 found=_first_line(e)) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise SubjectFormatError(path, f"not a readable image ({type(e).__name__}: {_first_line(e)})",
                                 expected="a PNG or JPEG file") from e


# --- arrays ----------------------------------------------------------------------------------------------------------
def require_key(d: dict, key: str, path: Path, what: str = "array"):
    if key not in d:
        raise SubjectFormatError(path, f"missing {what}", key=key, expected=f"key '{key}'", found=f"keys {sorted(d)[:16]}")
    return d[key]


def check_betas(a, path: Path, key: str, n_rows: int | None = None, n_cols: int | None = None) -> np.ndarray:
    """A 2-D real-valued (n_trials, n_voxels) array; returned as float32 (float16 kept), never float64."""
    if not hasattr(a, "shape") or len(a.shape) != 2:
        raise SubjectFormatError(path, key=key, expected="2-D array (n_trials, n_voxels)", found=describe(a))
    dt = np.dtype(a.dtype)
    if not (np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.integer)) or dt == np.bool_:
        raise SubjectFormatError(path, key=key, expected="a numeric (float or int) array", found=describe(a))
    if n_rows is not None and a.shape[0] != n_rows:
        raise SubjectFormatError(path, key=key, expected=f"{n_rows} rows", found=describe(a))
    if n_cols is not None and a.shape[1] != n_cols:
        raise SubjectFormatError(path, key=key, expected=f"{n_cols} voxels (columns)", found=describe(a))
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise SubjectFormatError(path, key=key, expected="at least one trial and one voxel", found=describe(a))
    if dt == np.float16 or dt == np.float32:
        out = np.asarray(a)
        check_finite_rows(out, path, key)
        return out
    src = np.asarray(a)
    if src.dtype.kind == "f":
        check_finite_rows(src, path, key)
    with np.errstate(over="ignore"):
        out = src.astype(np.float32)
    if src.dtype.kind == "f" and not np.isfinite(out).all():
        raise SubjectFormatError(path, "values too large for float32", key=key, expected="|value| < 3.4e38",
                                 found=f"max |value| {float(np.abs(src).max()):.3g}")
    return out


def check_finite_rows(a: np.ndarray, path: Path, key: str, row_offset: int = 0, block: int = 4096) -> None:
    """Refuse NaN/Inf anywhere in a (rows, cols) array; the error names the first bad row. Scans in row blocks."""
    for s in range(0, a.shape[0], block):
        blk = a[s : s + block]
        ok = np.isfinite(blk).all(axis=1)
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            bad = blk[r]
            n_bad = int(np.count_nonzero(~np.isfinite(bad)))
            raise SubjectFormatError(path, f"row {row_offset + s + r} holds NaN or Inf ({n_bad} of {a.shape[1]} values)",
                                     key=key, expected="finite values", found="NaN/Inf")


def check_int_vector(a, path: Path, key: str, n: int | None = None, allow_float_ints: bool = True) -> np.ndarray:
    """A 1-D integer vector (float storage allowed if every value is a whole number, as in MATLAB files)."""
    a = np.asarray(a)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise SubjectFormatError(path, key=key, expected="1-D integer vector", found=describe(a))
    if n is not None and a.shape[0] != n:
        raise SubjectFormatError(path, key=key, expected=f"{n} values (one per row)", found=describe(a))
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating) and allow_float_ints:
        if not np.isfinite(a).all() or not np.all(a == np.round(a)):
            raise SubjectFormatError(path, key=key, expected="whole numbers", found="fractional or non-finite values")
        return a.astype(np.int64)
    raise SubjectFormatError(path, key=key, expected="integer vector", found=describe(a))


def check_index_range(idx: np.ndarray, n: int, path: Path, key: str, what: str = "image") -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = int(idx[(idx < 0) | (idx >= n)][0])
        raise SubjectFormatError(path, f"trial points at a missing {what}", key=key, expected=f"0 <= index < {n}", found=bad)


def check_unique_sorted(idx: np.ndarray, path: Path, key: str) -> None:
    """Strictly increasing, no duplicates (HDF5 row lists, voxel indices)."""
    if idx.size > 1:
        d = np.diff(idx)
        if np.any(d == 0):
            k = int(np.flatnonzero(d == 0)[0])
            raise SubjectFormatError(path, "duplicate index", key=key, expected="unique indices", found=f"{int(idx[k])} twice")
        if np.any(d < 0):
            k = int(np.flatnonzero(d < 0)[0])
            raise SubjectFormatError(path, "unsorted indices", key=key, expected="ascending indices",
                                     found=f"{int(idx[k])} before {int(idx[k + 1])}")


def check_mask(m, path: Path, key: str, n: int | None = None) -> np.ndarray:
    """A boolean (or 0/1) ROI mask of length ``n``, with at least one voxel."""
    m = np.asarray(m)
    if m.ndim == 2 and 1 in m.shape:
        m = m.reshape(-1)
    if m.ndim != 1:
        raise SubjectFormatError(path, key=key, expected="1-D boolean mask", found=describe(m))
    if m.dtype != np.bool_:
        if not (np.issubdtype(m.dtype, np.number) and np.isin(m, (0, 1)).all()):
            raise SubjectFormatError(path, key=key, expected="boolean (or 0/1) mask", found=describe(m))
        m = m.astype(bool)
    if n is not None and m.shape[0] != n:
        raise SubjectFormatError(path, "mask does not match the data", key=key, expected=f"{n} entries (one per voxel)",
                                 found=f"{m.shape[0]} entries")
    if not m.any():
        raise SubjectFormatError(path, "empty ROI", key=key, expected="at least one voxel", found="0 voxels")
    return m


def to_uint8_images(a, path: Path, key: str, *, layout: str = "NHWC", value_range: str | None = None) -> np.ndarray:
    """Convert an image stack to (N, H, W, 3) uint8.

    Parameters
    ----------
    a : array
        The stack in ``layout`` (``"NHWC"`` or ``"NCHW"``); grey images (N, H, W) or 1 channel are repeated to RGB.
    value_range : {"0-255", "0-1", "-1-1", None}
        ``None`` infers it: integers are 0-255, floats within [0, 1] are 0-1, floats within [-1, 1] are -1-1; other
        floats are refused (never guessed).
    """
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[..., None] if layout.upper() == "NHWC" else a[:, None]
    if a.ndim != 4:
        raise SubjectFormatError(path, "not an image stack", key=key, expected="(N, H, W, 3) or (N, 3, H, W) array", found=describe(a))
    if layout.upper() == "NCHW":
        a = np.moveaxis(a, 1, -1)
    elif layout.upper() != "NHWC":
        raise SubjectFormatError(path, "unknown image layout", key="layout", expected="NHWC or NCHW", found=layout)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.shape[-1] != 3 or a.shape[1] < 2 or a.shape[2] < 2 or a.shape[0] == 0:
        raise SubjectFormatError(path, "not an image stack", key=key, expected=f"{layout} images with 1, 3 or 4 channels",
                                 found=describe(a))
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number) or a.dtype.kind == "c":
        raise SubjectFormatError(path, "not an image stack", key=key, expected="real numeric pixel values",
                                 found=describe(a))
    if a.dtype == np.uint8 and value_range in (None, "0-255"):
        return np.ascontiguousarray(a)
    with np.errstate(over="ignore", invalid="ignore"):
        f = a.astype(np.float32)
    if not np.isfinite(f).all():
        raise SubjectFormatError(path, "images hold NaN, Inf or huge values", key=key, expected="finite pixel values",
                                 found="NaN/Inf")
    lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
    if value_range is None:
        if np.issubdtype(a.dtype, np.integer):
            value_range = "0-255"
        elif lo >= 0 and hi <= 1.0:
            value_range = "0-1"
        elif lo >= -1 and hi <= 1.0:
            value_range = "-1-1"
        else:  # never guess 0-255 for floats: [0, 2] would become near-black images (docs/formats.md)
            raise SubjectFormatError(path, "float pixel values outside [0, 1] and [-1, 1]", key=key,
                                     expected="float images in [0, 1] or [-1, 1] (or declare range: 0-255)",
                                     found=f"[{lo:.4g}, {hi:.4g}]")
    ranges = {"0-255": (0.0, 255.0), "0-1": (0.0, 1.0), "-1-1": (-1.0, 1.0)}
    if value_range not in ranges:
        raise SubjectFormatError(path, "unknown value range", key="range", expected=sorted(ranges), found=value_range)
    rlo, rhi = ranges[value_range]
    tol = 1e-3 * (rhi - rlo)
    if lo < rlo - tol or hi > rhi + tol:
        raise SubjectFormatError(path, "pixel values outside the declared range", key=key,
                                 expected=f"values in [{rlo:g}, {rhi:g}]", found=f"[{lo:.4g}, {hi:.4g}]")
    return np.clip(np.rint((f - rlo) * (255.0 / (rhi - rlo))), 0, 255).astype(np.uint8)
