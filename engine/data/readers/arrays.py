"""Plain arrays (``.npz``, ``.mat`` v5 and v7.3, ``.h5``) described by a mapping file (see ``engine.data.mapping``).

``read(SRC, mapping=FILE)`` or ``read(FILE)`` when the mapping names its data ``file``. Train and test betas become
trials (split 0/1); each trial points at an image through ``trials.*image_index`` (trial i → image i when omitted);
images are converted from the declared layout and value range to (N, H, W, 3) uint8 (flattened rows are unrolled
with ``images.shape``/``order`` first, see ``own_images``; ``prior_images`` are read the same way). MATLAB v7.3 files are HDF5
written column-major, so h5py sees every array with reversed axes: ``memory_order: auto`` reverses them back for
``.mat`` files (``F`` forces it for other HDF5 files written by MATLAB; ``C`` turns it off). MATLAB v5 files are
read with scipy, which already returns the MATLAB shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.data.mapping import MappingConfig, is_mapping_file, load_mapping
from engine.data.readers.assemble import checked, provenance, repeat_numbers
from engine.data.readers.checks import (check_betas, check_declared_size, check_index_range, check_int_vector,
                                        check_mask, describe, load_npz, require_file, to_uint8_images)
from engine.data.readers.own_images import check_prior_matches, read_png_folder, source_channels, unflatten_images
from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable
from engine.errors import SubjectFormatError

SUFFIXES = (".npz", ".mat", ".h5", ".hdf5")
# bytes per element of the MATLAB classes scipy.io.whosmat reports (cells and structs are refused later)
_MAT_ITEMSIZE = {"double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
                 "int64": 8, "uint64": 8, "logical": 1, "char": 2}


def sniff(path: Path) -> bool:
    path = Path(path)
    return (path.is_file() and path.suffix.lower() in SUFFIXES) or is_mapping_file(path)


class ArrayFile:
    """Named arrays of one file, read on demand; every array comes back as a numpy array or a clear error."""

    def __init__(self, path: Path, memory_order: str = "auto"):
        import h5py

        self.path = require_file(Path(path), "array file")
        suffix = self.path.suffix.lower()
        self.kind = "npz" if suffix == ".npz" else ("hdf5" if h5py.is_hdf5(self.path) else ("mat5" if suffix == ".mat" else "?"))
        if self.kind == "?":
            raise SubjectFormatError(self.path, "not a readable array file (truncated or corrupt?)",
                                     expected=".npz, .mat (v5 or v7.3) or HDF5", found="unknown content")
        self.reverse = memory_order == "F" or (memory_order == "auto" and self.kind == "hdf5" and suffix == ".mat")
        self._cache: dict[str, np.ndarray] | None = None
        if self.kind == "npz":
            self._cache = load_npz(self.path)
        elif self.kind == "mat5":
            self._cache = self._load_mat5()

    def _load_mat5(self) -> dict[str, np.ndarray]:
        import scipy.io

        try:
            for name, shape, cls in scipy.io.whosmat(str(self.path)):  # sizes from the headers, before reading
                if cls in _MAT_ITEMSIZE:
                    check_declared_size(self.path, name, shape, _MAT_ITEMSIZE[cls])
            d = scipy.io.loadmat(str(self.path), squeeze_me=False, mat_dtype=False)
        except SubjectFormatError:
            raise
        except Exception as e:  # noqa: BLE001 - scipy's MATLAB parser raises almost anything on corrupt bytes
            # (ValueError, MatReadError, zlib.error, struct.error, even UnboundLocalError from its Cython reader)
            raise SubjectFormatError(self.path, f"not a readable MATLAB file, truncated or corrupt ({type(e).__name__}: "
                                                f"{str(e).splitlines()[0] if str(e) else ''})") from e
        return {k: v for k, v in d.items() if not k.startswith("__")}

    def keys(self) -> list[str]:
        if self._cache is not None:
            return sorted(self._cache)
        import h5py

        from engine.data.readers.checks import open_h5

        names: list[str] = []
        with open_h5(self.path) as f:
            try:
                f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            except (KeyError, OSError, RuntimeError, ValueError, TypeError):
                pass  # only used to list what a corrupt file holds in an error message
        # a corrupt file can yield names as bytes: list them all as text
        return sorted(n if isinstance(n, str) else bytes(n).decode("utf-8", "replace") for n in names)

    def get(self, key: str, text_ok: bool = False) -> np.ndarray:
        if self._cache is not None:
            if key not in self._cache:
                raise SubjectFormatError(self.path, "missing array", key=key, expected=f"an array named '{key}'",
                                         found=f"keys {self.keys()[:16]}")
            a = self._cache[key]
            if a.dtype == object:
                raise SubjectFormatError(self.path, "not a numeric array (MATLAB cell or struct?)", key=key,
                                         expected="a numeric array", found="object array")
            if a.dtype.kind not in ("biufSU" if text_ok else "biuf"):
                raise SubjectFormatError(self.path, "not a real numeric array", key=key,
                                         expected="a real numeric array", found=str(a.dtype))
        else:
            import h5py

            from engine.data.readers.checks import h5_read, oneline, open_h5

            with open_h5(self.path) as f:
                try:
                    obj = f.get(key)
                except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
                    raise SubjectFormatError(self.path, f"corrupt HDF5 structure ({oneline(e)})", key=key) from e
                if not isinstance(obj, h5py.Dataset):
                    raise SubjectFormatError(self.path, "missing array", key=key, expected=f"a dataset named '{key}'",
                                             found=f"keys {self.keys()[:16]}")
                check_declared_size(self.path, key, obj.shape, obj.dtype)
                a = np.asarray(h5_read(obj, self.path, key, ()))
            if a.dtype.kind not in "biuf":
                raise SubjectFormatError(self.path, "not a numeric array", key=key, expected="a numeric array",
                                         found=str(a.dtype))
        return a.T if self.reverse and a.ndim > 1 else a


def _to_nhwc(a: np.ndarray, layout: str) -> np.ndarray:
    letters = layout.upper()
    if a.ndim != len(letters):
        return a  # to_uint8_images reports the shape
    if letters == "NHW":
        return a
    return np.transpose(a, [letters.index(c) for c in "NHWC"])


def read(path: Path, *, mapping: str | Path | MappingConfig | None = None, **_ignored) -> Subject:
    """Open plain arrays described by a mapping file (``path`` may be the mapping file itself)."""
    m, src = _mapping_and_file(Path(path), mapping)
    base = m.source.parent
    sources = [src.path, m.source]
    X, split, n_train = _betas_and_split(m, src)
    n_trials, n_vox = X.shape
    images, n_tr_img, channels = _images(m, base, src, sources)
    image_index = _image_index(m, src, n_trials, n_train, len(images), n_tr_img)
    session = check_int_vector(src.get(m.session), src.path, m.session, n=n_trials) if m.session else np.ones(n_trials, np.int64)
    run = check_int_vector(src.get(m.run), src.path, m.run, n=n_trials) if m.run else np.ones(n_trials, np.int64)

    rois = {name: check_mask(src.get(key), src.path, key, n_vox) for name, key in m.rois.items()}
    if not rois:
        rois = {"all": np.ones(n_vox, bool)}
    labels = None
    if m.labels:
        labels = check_int_vector(src.get(m.labels), src.path, m.labels, n=len(images))
        if m.categories and (labels.min() < -1 or labels.max() >= len(m.categories)):
            raise SubjectFormatError(src.path, "label outside the category list", key=m.labels,
                                     expected=f"-1 <= label < {len(m.categories)}", found=int(labels.max()))
    prior = None
    if m.prior is not None:
        prior, prior_sources = _prior_images(m, base, src, images, max(channels))
        sources.extend(prior_sources)
    vox = VoxelTable.unknown(n_vox)
    vox = VoxelTable(hemi=vox.hemi, vertex=vox.vertex, ijk=vox.ijk, noise_ceiling=_noise_ceiling(m, src, n_vox))
    trials = TrialTable(image_index=image_index.astype(np.int64), session=session, run=run,
                        repeat=repeat_numbers(image_index), split=split.astype(np.int8))
    s = Subject(betas=X, trials=trials, images=images, voxels=vox, rois=rois,
                stimuli=Stimuli(categories=list(m.categories), labels=labels),
                name=m.name or src.path.stem, format="arrays", path=src.path,
                provenance=provenance("arrays", sources, [], mapping=str(m.source), file_kind=src.kind,
                                      reversed_axes=src.reverse, image_channels=max(channels),
                                      flattened_images=None if m.image_shape is None else
                                      {"shape": list(m.image_shape), "order": m.pixel_order}),
                prior_images=prior)
    return checked(s, src.path)


def _mapping_and_file(path: Path | None, mapping) -> tuple[MappingConfig, ArrayFile]:
    """The mapping (``path`` itself when it is the mapping file) and the arrays file it describes."""
    if mapping is None and is_mapping_file(path):
        mapping = path
        path = None
    if mapping is None:
        raise SubjectFormatError(path, "plain arrays need a mapping file", expected="--mapping FILE (YAML or JSON)",
                                 found="none")
    m = mapping if isinstance(mapping, MappingConfig) else load_mapping(mapping)
    base = m.source.parent
    if path is None:
        if m.file is None:
            raise SubjectFormatError(m.source, "the mapping names no data file", key="file",
                                     expected="file: <arrays file> (or pass the file as SRC)", found="none")
        path = m.file if m.file.is_absolute() else base / m.file
    return m, ArrayFile(path, m.memory_order)


def _betas_and_split(m: MappingConfig, src: ArrayFile):
    """(betas (n_trials, n_voxels), split (0 train / 1 test), n_train or None when one array holds all trials)."""
    if m.betas_all:
        X = check_betas(src.get(m.betas_all), src.path, m.betas_all)
        if m.split:
            sp = src.get(m.split, text_ok=True)
            if sp.dtype.kind in "SU":
                sp = np.char.lower(sp.astype(str))
                bad = ~np.isin(sp, ("train", "test"))
                if bad.reshape(-1).any():
                    raise SubjectFormatError(src.path, key=m.split, expected="train/test", found=str(sp.reshape(-1)[bad.reshape(-1)][0]))
                sp = (sp == "test").astype(np.int64)
            split = check_int_vector(sp, src.path, m.split, n=X.shape[0])
            if not np.isin(split, (0, 1)).all():
                raise SubjectFormatError(src.path, key=m.split, expected="0 (train) or 1 (test)",
                                         found=sorted(set(np.unique(split).tolist()) - {0, 1})[:3])
        else:
            split = np.zeros(X.shape[0], np.int64)
        return X, split, None
    Xtr = check_betas(src.get(m.betas_train), src.path, m.betas_train)
    parts = [Xtr]
    if m.betas_test:
        Xte = check_betas(src.get(m.betas_test), src.path, m.betas_test, n_cols=Xtr.shape[1])
        parts.append(Xte.astype(Xtr.dtype, copy=False))
    X = np.concatenate(parts) if len(parts) > 1 else Xtr
    n_train = Xtr.shape[0]
    split = np.r_[np.zeros(n_train, np.int64), np.ones(X.shape[0] - n_train, np.int64)]
    return X, split, n_train


def _images(m: MappingConfig, base: Path, src: ArrayFile, sources: list):
    """(uint8 images (n_images, H, W, 3), the number of training images, each stack's source channels); a separate
    images file is appended to ``sources``."""
    isrc = src
    if m.images_file is not None:
        isrc = ArrayFile(m.images_file if m.images_file.is_absolute() else base / m.images_file, m.memory_order)
        sources.append(isrc.path)
    rng = None if m.value_range == "auto" else m.value_range
    channels: list[int] = []

    def imgs(key):
        a = _image_stack(isrc, key, m.image_shape, m.pixel_order, m.layout)
        channels.append(source_channels(a))
        return to_uint8_images(a, isrc.path, key, layout="NHWC", value_range=rng)

    if m.images_all:
        images = imgs(m.images_all)
        return images, len(images), channels
    tr = imgs(m.images_train)
    images = tr
    if m.images_test:
        te = imgs(m.images_test)
        if te.shape[1:] != tr.shape[1:]:
            raise SubjectFormatError(isrc.path, "train and test images differ in size", key=m.images_test,
                                     expected=f"(N, {tr.shape[1]}, {tr.shape[2]}, 3)", found=describe(te))
        images = np.concatenate([tr, te])
    return images, len(tr), channels


def _image_index(m: MappingConfig, src: ArrayFile, n_trials: int, n_train: int | None, n_img: int,
                 n_tr_img: int) -> np.ndarray:
    """The image each trial shows (0-based rows of the images), checked against the number of images."""
    # trials -> images
    def idx(key, n, what):
        v = check_int_vector(src.get(key), src.path, key, n=n) - m.index_base
        return v

    if m.image_index:
        image_index = idx(m.image_index, n_trials, "image")
    elif m.train_image_index or m.test_image_index:
        if n_train is None:
            raise SubjectFormatError(m.source, "train/test image indices need betas.train/betas.test",
                                     key="trials.train_image_index", expected="trials.image_index with betas.all",
                                     found="train_image_index")
        tri = idx(m.train_image_index, n_train, "image") if m.train_image_index else np.arange(n_train)
        if n_trials > n_train:
            off = n_tr_img if (m.images_test and not m.images_all) else 0
            tei = (idx(m.test_image_index, n_trials - n_train, "image") if m.test_image_index
                   else np.arange(n_trials - n_train))
            if off:  # indices into the test images: a negative one must not land on a training image
                check_index_range(tei, n_img - off, src.path, m.test_image_index or "trials", "test image")
            tei = tei + off
        else:
            tei = np.zeros(0, np.int64)
        image_index = np.concatenate([tri, tei])
    else:
        if n_img == n_trials:
            image_index = np.arange(n_trials)
        else:
            raise SubjectFormatError(m.source, "cannot tell which image each trial shows", key="trials.image_index",
                                     expected=f"an index array, or as many images as trials ({n_trials})",
                                     found=f"{n_img} images")
    key_for_err = m.image_index or m.test_image_index or m.train_image_index or "trials"
    check_index_range(image_index, n_img, src.path, key_for_err)
    return image_index


def _noise_ceiling(m: MappingConfig, src: ArrayFile, n_vox: int) -> np.ndarray:
    """Per-voxel noise ceiling (float32, NaN = unknown)."""
    nc = np.full(n_vox, np.nan, np.float32)
    if m.noise_ceiling:
        nc64 = np.asarray(src.get(m.noise_ceiling), np.float64).reshape(-1)
        if nc64.shape != (n_vox,):
            raise SubjectFormatError(src.path, key=m.noise_ceiling, expected=f"({n_vox},) per-voxel values",
                                     found=describe(nc64))
        known = nc64[~np.isnan(nc64)]  # NaN = unknown for that voxel
        if known.size and (not np.isfinite(known).all() or known.min() < -1 or known.max() > 1):
            raise SubjectFormatError(src.path, key=m.noise_ceiling, expected="values in [0, 1] (NaN = unknown)",
                                     found=f"[{known.min():.3g}, {known.max():.3g}]")
        nc = nc64.astype(np.float32)
    return nc


def _image_stack(isrc: ArrayFile, key: str, shape, order: str, layout: str) -> np.ndarray:
    """An image array in NHWC (or NHW): unflattened when ``shape`` is declared, else permuted from ``layout``."""
    a = isrc.get(key)
    if shape is not None:
        return unflatten_images(a, shape, order, isrc.path, key)
    return _to_nhwc(a, layout)


def _prior_images(m: MappingConfig, base: Path, src: ArrayFile, stimuli: np.ndarray, stimuli_channels: int):
    """(uint8 (M, H, W, 3) prior images, files read) of the mapping's ``prior_images``, checked against the stimuli."""
    p = m.prior
    if p.folder is not None:
        folder = p.folder if p.folder.is_absolute() else base / p.folder
        raw, ch = read_png_folder(folder)
        where, key, files = folder, "prior_images", [folder]
        prior = to_uint8_images(raw, folder, key, layout="NHWC", value_range="0-255")
    else:
        psrc = src
        if p.file is not None:
            psrc = ArrayFile(p.file if p.file.is_absolute() else base / p.file, m.memory_order)
        where, key, files = psrc.path, p.key, [psrc.path]
        a = _image_stack(psrc, p.key, p.image_shape, p.pixel_order, p.layout)
        ch = source_channels(a)
        prior = to_uint8_images(a, psrc.path, p.key, layout="NHWC",
                                value_range=None if p.value_range == "auto" else p.value_range)
    check_prior_matches(prior, ch, stimuli, stimuli_channels, where, key)
    return prior, files
