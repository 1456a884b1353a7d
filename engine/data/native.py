"""The native NeuroLens subject format: one self-describing folder (see ``docs/formats.md``).

::

    subj.nlsubj/
      subject.json       format tag, schema version, sizes, ROI order, categories, provenance, volume geometry
      betas.npy          (n_trials, n_voxels) float16|float32, memory-mapped on open
      images.npy         (n_images, H, W, 3) uint8, memory-mapped on open
      trials.npz         image_index, session, run, repeat, split (0 train / 1 test)
      voxels.npz         hemi, vertex (fsaverage5), ijk, noise_ceiling
      rois.npz           one bool mask (n_voxels,) per ROI
      stimuli.json       labels, captions, source ids per image
      ground_truth.npz   (simulations only) generating parameters
      prior_images.npy   (optional) (n_prior, H, W, 3) uint8 unlabeled images of the stimuli's kind

Plain ``.npy``/``.npz``/JSON only: no pickle anywhere (``allow_pickle=False``). Writing is atomic (a complete folder is
renamed into place), so an interrupted write never leaves something that opens as a valid subject.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np

from engine._version import __version__
from engine.atomic import atomic_dir, check_replaceable, ensure_free_space, output_errors
from engine.data.readers.checks import check_finite_rows, load_npz
from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable
from engine.errors import SubjectFormatError
from engine.jsonfile import field, read_object
from engine.safe_yaml import short_repr

FORMAT_TAG = "neurolens-subject"
SCHEMA_VERSION = 1
SUFFIX = ".nlsubj"
PRIOR_FILE = "prior_images.npy"
_REQUIRED = ("subject.json", "betas.npy", "images.npy", "trials.npz", "voxels.npz", "rois.npz", "stimuli.json")


def is_native(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "subject.json").is_file()


def write_subject(subject: Subject, path: str | Path, *, overwrite: bool = False, on_block=None,
                  sources=()) -> Path:
    """Write ``subject`` as a native folder at ``path``, atomically. Returns the path.

    Arrays are streamed from the subject's (possibly memory-mapped or lazy) arrays in row blocks of at most ~64 MB,
    so writing a large subject never holds a second full copy in RAM. ``on_block(name, rows_done, n_rows)``, if
    given, is called after each block (progress; raising there, e.g. on cancel, aborts and removes the partial folder).
    An existing ``path`` is replaced only with ``overwrite`` and only if it is a subject folder that neither is, holds
    nor lies inside the subject's source (or any of ``sources``); the free space is checked before writing.
    """
    path = Path(path)
    _check_consistent(subject, path)
    check_replaceable(path, marker="subject.json", kind="NeuroLens subject", overwrite=overwrite,
                      sources=[subject.path, *sources])
    need = _nbytes(subject.betas) + int(np.prod(subject.images.shape, dtype=np.int64))
    with output_errors(path.parent, need):
        path.parent.mkdir(parents=True, exist_ok=True)
    ensure_free_space(path.parent, need, "the subject")
    with atomic_dir(path, overwrite=overwrite, need=need) as tmp:
        source = Path(subject.path) / "betas.npy" if subject.format == "native" and subject.path else (subject.path or path)
        _save_npy_blocked(tmp / "betas.npy", subject.betas, on_block=on_block, finite=source)
        _save_npy_blocked(tmp / "images.npy", subject.images, dtype=np.uint8, on_block=on_block)
        if subject.prior_images is not None:
            _save_npy_blocked(tmp / PRIOR_FILE, subject.prior_images, dtype=np.uint8, on_block=on_block)
        np.savez(tmp / "trials.npz", **{k: np.asarray(v) for k, v in subject.trials.as_dict().items()})
        np.savez(tmp / "voxels.npz", **{k: np.asarray(v) for k, v in subject.voxels.as_dict().items()})
        np.savez(tmp / "rois.npz", **{k: np.asarray(v, bool) for k, v in subject.rois.items()})
        if subject.ground_truth:
            np.savez(tmp / "ground_truth.npz", **{k: np.asarray(v) for k, v in subject.ground_truth.items()})
        st = subject.stimuli
        stim = {
            "categories": list(st.categories),
            "labels": None if st.labels is None else np.asarray(st.labels).astype(int).tolist(),
            "captions": None if st.captions is None else list(st.captions),
            "source_ids": None if st.source_ids is None else [str(s) for s in st.source_ids],
        }
        (tmp / "stimuli.json").write_text(json.dumps(stim))
        prov = dict(subject.provenance)
        prov.setdefault("software", {})
        prov["software"] = {**prov["software"], "neurolens": __version__}
        meta = {
            "format": FORMAT_TAG,
            "schema_version": SCHEMA_VERSION,
            "name": subject.name,
            "source_format": subject.format,
            "n_trials": subject.n_trials,
            "n_voxels": subject.n_voxels,
            "n_images": subject.n_images,
            "image_shape": list(subject.image_shape),
            "betas_dtype": str(np.dtype(subject.betas.dtype)),
            "rois": list(subject.rois),
            "ground_truth": sorted(subject.ground_truth or {}),
            "n_prior_images": 0 if subject.prior_images is None else int(subject.prior_images.shape[0]),
            "volume": subject.volume,
            "provenance": prov,
        }
        (tmp / "subject.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    return path


def _nbytes(a) -> int:
    return int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _save_npy_blocked(path: Path, arr, dtype=None, block: int = 2048, on_block=None, finite=None) -> None:
    """Write ``arr`` as ``.npy`` in row blocks through ordinary writes (never a memory map: a full disk is then an
    ``OSError``, not a ``SIGBUS``), after reserving the file's size. With ``finite`` (the source's path, named in the
    error) a row holding NaN or Inf is refused."""
    dtype = np.dtype(dtype or arr.dtype)
    shape = tuple(int(n) for n in arr.shape)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * max(dtype.itemsize, 4)  # float32 temporaries
    block = max(1, min(block, (64 << 20) // max(1, row_bytes)))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
        end = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        _reserve(f, end)
        for s in range(0, shape[0], block):
            rows = np.asarray(arr[s : s + block])
            if finite is not None and rows.dtype.kind in "fc":
                check_finite_rows(rows, finite, "betas", row_offset=s)
            f.write(np.ascontiguousarray(rows, dtype=dtype).tobytes())
            if on_block is not None:
                on_block(path.stem, min(s + block, shape[0]), shape[0])
        f.flush()
        os.fsync(f.fileno())


def _reserve(f, size: int) -> None:
    """Allocate ``size`` bytes for ``f`` up front where the file system can (a full disk fails here, at once)."""
    try:
        os.posix_fallocate(f.fileno(), 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
    except AttributeError:  # no posix_fallocate on this platform
        pass


def _check_consistent(s: Subject, path) -> None:
    """Refuse to write an inconsistent subject (the same checks ``read_native`` makes)."""
    if s.prior_images is not None:
        _validate_prior(Path(path) / PRIOR_FILE, s.prior_images, s.images)
    _validate(
        path,
        betas=s.betas,
        images=s.images,
        trials=s.trials,
        voxels=s.voxels,
        rois=s.rois,
        stimuli=s.stimuli,
    )


def read_native(path: str | Path) -> Subject:
    """Open a native subject folder. Betas and images are memory-mapped read-only; small tables are loaded."""
    path = Path(path)
    if not path.exists():
        raise SubjectFormatError(path, "no such file or folder")
    if not path.is_dir():
        raise SubjectFormatError(path, "not a NeuroLens subject folder", expected="a folder with subject.json")
    for name in _REQUIRED:
        if not (path / name).is_file():
            raise SubjectFormatError(path / name, "missing file of the native subject format")
    meta = _read_json(path / "subject.json")
    sj = path / "subject.json"
    if meta.get("format") != FORMAT_TAG:
        raise SubjectFormatError(sj, key="format", expected=repr(FORMAT_TAG), found=short_repr(meta.get("format")))
    version = field(meta, "schema_version", int, sj, default=SCHEMA_VERSION, error=SubjectFormatError)
    if version > SCHEMA_VERSION:
        raise SubjectFormatError(sj, "written by a newer NeuroLens", key="schema_version",
                                 expected=f"<= {SCHEMA_VERSION}", found=version)
    for key in ("n_trials", "n_voxels", "n_images"):
        field(meta, key, int, sj, default=0, error=SubjectFormatError)
    roi_names = field(meta, "rois", list, sj, default=[], error=SubjectFormatError)
    if not all(isinstance(r, str) for r in roi_names):
        raise SubjectFormatError(sj, key="rois", expected="a list of ROI names (strings)", found=short_repr(roi_names))
    field(meta, "name", str, sj, default="", error=SubjectFormatError)
    field(meta, "provenance", dict, sj, default={}, error=SubjectFormatError)
    field(meta, "volume", (dict, type(None)), sj, default=None, error=SubjectFormatError)
    betas = _load_npy(path / "betas.npy")
    images = _load_npy(path / "images.npy")
    trials_d = _load_npz(path / "trials.npz", ["image_index", "session", "run", "repeat", "split"])
    voxels_d = _load_npz(path / "voxels.npz", ["hemi", "vertex", "ijk", "noise_ceiling"])
    rois_d = _load_npz(path / "rois.npz", roi_names)
    rois = {n: rois_d[n] for n in roi_names}
    stimuli = _read_stimuli(path / "stimuli.json")
    gt = None
    if (path / "ground_truth.npz").is_file():
        gt = load_npz(path / "ground_truth.npz")
    trials = TrialTable(**trials_d)
    voxels = VoxelTable(**voxels_d)
    _validate(path, betas=betas, images=images, trials=trials, voxels=voxels, rois=rois, stimuli=stimuli)
    prior = _load_npy(path / PRIOR_FILE) if (path / PRIOR_FILE).is_file() else None
    if prior is not None:
        _validate_prior(path / PRIOR_FILE, prior, images)
    for key, got in (("n_trials", betas.shape[0]), ("n_voxels", betas.shape[1]), ("n_images", images.shape[0])):
        if int(meta.get(key, got)) != int(got):
            raise SubjectFormatError(path / "subject.json", key=key, expected=str(got), found=str(meta.get(key)))
    return Subject(
        betas=betas,
        trials=trials,
        images=images,
        voxels=voxels,
        rois=rois,
        stimuli=stimuli,
        name=meta.get("name", path.stem),
        format="native",
        path=path,
        provenance=meta.get("provenance", {}),
        ground_truth=gt,
        volume=meta.get("volume"),
        prior_images=prior,
    )


def _validate_prior(path: Path, prior, images) -> None:
    if prior.ndim != 4 or tuple(prior.shape[1:]) != tuple(images.shape[1:]) or np.dtype(prior.dtype) != np.uint8:
        raise SubjectFormatError(path, "prior images do not match the stimuli", key="prior_images",
                                 expected=f"uint8 (n, {images.shape[1]}, {images.shape[2]}, 3)",
                                 found=f"{prior.dtype} {tuple(prior.shape)}")


def _read_json(p: Path) -> dict:
    return read_object(p, SubjectFormatError)


def _read_stimuli(p: Path) -> Stimuli:
    d = _read_json(p)

    def names(key):
        v = field(d, key, (list, type(None)), p, default=None, error=SubjectFormatError)
        if v is not None and not all(isinstance(x, str) for x in v):
            raise SubjectFormatError(p, key=key, expected="a list of strings", found=short_repr(v))
        return v

    labels = field(d, "labels", (list, type(None)), p, default=None, error=SubjectFormatError)
    if labels is not None and not all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        raise SubjectFormatError(p, key="labels", expected="a list of integers", found=short_repr(labels))
    return Stimuli(categories=names("categories") or [],
                   labels=None if labels is None else np.asarray(labels, dtype=np.int64),
                   captions=names("captions"), source_ids=names("source_ids"))


def _load_npy(p: Path) -> np.ndarray:
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SubjectFormatError(p, f"unreadable or truncated .npy ({e})") from e


def _load_npz(p: Path, keys: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise SubjectFormatError(p, "missing array", key=missing[0], expected=f"keys {keys}", found=f"keys {sorted(z.files)}")
            return {k: z[k] for k in keys}
    except SubjectFormatError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError, EOFError
        raise SubjectFormatError(p, f"unreadable or truncated .npz ({type(e).__name__}: {e})") from e


def _validate(path, *, betas, images, trials: TrialTable, voxels: VoxelTable, rois, stimuli: Stimuli) -> None:
    """Shape, dtype and index checks shared by reading and writing. Cheap: never scans the betas."""
    path = Path(path)
    if betas.ndim != 2:
        raise SubjectFormatError(path / "betas.npy", expected="2-D array (n_trials, n_voxels)", found=f"shape {betas.shape}")
    if np.dtype(betas.dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise SubjectFormatError(path / "betas.npy", expected="float16 or float32", found=str(betas.dtype))
    if images.ndim != 4 or images.shape[-1] != 3:
        raise SubjectFormatError(path / "images.npy", expected="(n_images, H, W, 3) array", found=f"shape {images.shape}")
    if np.dtype(images.dtype) != np.uint8:
        raise SubjectFormatError(path / "images.npy", expected="uint8", found=str(images.dtype))
    n_trials, n_voxels = betas.shape
    for k, v in trials.as_dict().items():
        v = np.asarray(v)
        if v.shape != (n_trials,):
            raise SubjectFormatError(path / "trials.npz", key=k, expected=f"shape ({n_trials},)", found=f"shape {v.shape}")
        if not np.issubdtype(v.dtype, np.integer):
            raise SubjectFormatError(path / "trials.npz", key=k, expected="integers", found=str(v.dtype))
    ii = np.asarray(trials.image_index)
    if n_trials and (ii.min() < 0 or ii.max() >= images.shape[0]):
        bad = int(ii[(ii < 0) | (ii >= images.shape[0])][0])
        raise SubjectFormatError(
            path / "trials.npz", "trial points at a missing image", key="image_index",
            expected=f"0 <= index < {images.shape[0]}", found=bad,
        )
    sp = np.asarray(trials.split)
    if n_trials and not np.isin(sp, (0, 1)).all():
        raise SubjectFormatError(path / "trials.npz", key="split", expected="0 (train) or 1 (test)", found=sorted(set(np.unique(sp).tolist()) - {0, 1}))
    for k, v in voxels.as_dict().items():
        v = np.asarray(v)
        want = (n_voxels, 3) if k == "ijk" else (n_voxels,)
        if v.shape != want:
            raise SubjectFormatError(path / "voxels.npz", key=k, expected=f"shape {want}", found=f"shape {v.shape}")
        kinds, what = ("f", "floating-point values (NaN = unknown)") if k == "noise_ceiling" else ("iu", "integers")
        if v.dtype.kind not in kinds:
            raise SubjectFormatError(path / "voxels.npz", key=k, expected=what, found=str(v.dtype))
    for name, m in rois.items():
        m = np.asarray(m)
        if m.dtype.kind not in "biu":
            raise SubjectFormatError(path / "rois.npz", key=name, expected="a boolean mask", found=str(m.dtype))
        if m.shape != (n_voxels,):
            raise SubjectFormatError(path / "rois.npz", key=name, expected=f"bool mask of shape ({n_voxels},)", found=f"shape {m.shape}")
        if not m.any():
            raise SubjectFormatError(path / "rois.npz", "empty ROI", key=name, expected="at least one voxel", found="0 voxels")
    if stimuli.labels is not None and len(stimuli.labels) != images.shape[0]:
        raise SubjectFormatError(path / "stimuli.json", key="labels", expected=f"{images.shape[0]} labels", found=len(stimuli.labels))
    if stimuli.captions is not None and len(stimuli.captions) != images.shape[0]:
        raise SubjectFormatError(path / "stimuli.json", key="captions", expected=f"{images.shape[0]} captions", found=len(stimuli.captions))
