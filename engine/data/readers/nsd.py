"""NSD as MindEyeV2 distributes it (Hugging Face ``pscotti/mindeyev2``).

::

    ROOT/
      betas_all_subj01_fp32_renorm.hdf5     dataset "betas", float32 (sessions·750, n_voxels); row = global trial
      coco_images_224_float16.hdf5          dataset "images", float16 (73000, 3, 224, 224) in [0, 1]; row = 73KID − 1
      brain_region_masks.hdf5               (optional) group "subj01": bool datasets nsd_general, V1, V2, V3, V4, higher_vis
      wds/subj01/train/{0..N−1}.tar         webdataset, one tar per session: "<key>.behav.npy" (1, 17) per trial
      wds/subj01/new_test/0.tar             every trial of a shared1000 image (the default test set)
      wds/subj01/test/0.tar                 the older test set (``test_set="test"``)

Trials come from the ``behav`` arrays (column 0 image row, 2 session, 3 run, 5 global trial = betas row; −1 missing).
Test grouping: ``new_test`` (default) = all trials of the shared1000 images across all sessions, as in MindEyeV2's
paper results; ``test`` = the older set. The subject's images are the images its trials use, in ascending 73KID order
(the order reconstructions are written in), read lazily from the shared image file. Betas are read lazily
(``LazyBetas``) and loaded once as float16 when needed; the ``_renorm`` betas are already z-scored per voxel with
training statistics upstream, which the provenance records.
"""

from __future__ import annotations

import io
import math
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np

from engine.data.readers.assemble import checked, provenance, repeat_numbers
from engine.data.readers.checks import oneline, check_mask, h5_dataset, open_h5, require_dir, require_file
from engine.data.readers.lazy import LazyBetas, LazyImages
from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable
from engine.errors import SubjectFormatError

BETAS_RE = re.compile(r"^betas_all_subj0?(\d+)_fp32_renorm\.hdf5$")
IMAGES_FILE = "coco_images_224_float16.hdf5"
MASKS_FILE = "brain_region_masks.hdf5"
ROI_ORDER = ("nsd_general", "V1", "V2", "V3", "V4", "higher_vis")  # general first, specific later
TEST_SETS = ("new_test", "test")
N_BEHAV_COLS = 17
COL_IMAGE, COL_SESSION, COL_RUN, COL_GLOBAL_TRIAL, COL_SHARED = 0, 2, 3, 5, 16


def _betas_files(folder: Path) -> dict[int, Path]:
    out = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = BETAS_RE.match(p.name)
            if m and p.is_file():
                out[int(m.group(1))] = p
    return out


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return BETAS_RE.match(path.name) is not None
    return bool(_betas_files(path))


def _locate(path: Path, subject: int | None) -> tuple[Path, Path, int]:
    """(root folder, betas file, subject number) from a root folder or a betas file."""
    path = Path(path)
    if path.is_file():
        m = BETAS_RE.match(path.name)
        if not m:
            raise SubjectFormatError(path, "not an NSD betas file", expected="betas_all_subjXX_fp32_renorm.hdf5",
                                     found=path.name)
        return path.parent, path, int(m.group(1))
    require_dir(path, "NSD folder")
    files = _betas_files(path)
    if not files:
        raise SubjectFormatError(path, "no NSD betas file", expected="betas_all_subjXX_fp32_renorm.hdf5",
                                 found="none in the folder")
    if subject is None:
        if len(files) > 1:
            raise SubjectFormatError(path, "several NSD subjects; choose one with subject=N",
                                     expected="one betas file", found=f"subjects {sorted(files)}")
        subject = next(iter(files))
    if subject not in files:
        raise SubjectFormatError(path, f"no betas file for subject {subject}", expected=f"one of {sorted(files)}",
                                 found=f"subject {subject}")
    return path, files[subject], subject


class _UnusualTar(Exception):
    """A tar feature the fast scanner does not handle (pax or GNU long-name headers): use ``tarfile``."""


def _scan_tar(data: bytes, tar_path: Path):
    """Yield (name, payload) of the regular files of an uncompressed ustar/GNU tar held in ``data``.

    webdataset tars are plain ustar archives of small members; scanning the 512-byte headers directly is ~20× faster
    than ``tarfile`` for the 120,000 members of an NSD subject. Checksums are verified; anything unusual raises
    ``_UnusualTar`` so the caller can fall back to ``tarfile``.
    """
    pos, n = 0, len(data)
    while pos + 512 <= n:
        hdr = data[pos : pos + 512]
        if hdr[0] == 0 and hdr.count(0) == 512:
            return
        try:
            stored = int(hdr[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
            size_field = hdr[124:136]
            if size_field[0] & 0x80:
                raise _UnusualTar("base-256 size")
            size = int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError as e:
            raise SubjectFormatError(tar_path, f"corrupt tar header at byte {pos}") from e
        if stored != sum(hdr) - sum(hdr[148:156]) + 8 * 32:
            raise _UnusualTar("checksum")  # tarfile decides (it also accepts old signed checksums)
        kind = hdr[156:157]
        if kind not in (b"0", b"\0", b"5"):
            raise _UnusualTar(kind)
        name = hdr[0:100].split(b"\0", 1)[0]
        prefix = hdr[345:500].split(b"\0", 1)[0] if hdr[257:262] == b"ustar" else b""
        start = pos + 512
        if start + size > n:
            raise SubjectFormatError(tar_path, "unreadable or truncated tar (member data runs past the end of the file)")
        if kind != b"5":
            full = (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")
            yield full, data[start : start + size]
        pos = start + (size + 511) // 512 * 512
    if pos < n and data[pos:].strip(b"\0"):
        raise SubjectFormatError(tar_path, "unreadable or truncated tar (ends inside a header)")


def _tar_members(tar_path: Path):
    """(name, payload) of the regular files in a tar, by the fast scanner or ``tarfile``."""
    try:
        data = tar_path.read_bytes()
    except OSError as e:
        raise SubjectFormatError(tar_path, f"unreadable tar ({oneline(e)})") from e
    if data[257:262] == b"ustar":
        try:
            return list(_scan_tar(data, tar_path))
        except _UnusualTar:
            pass
    out = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            for m in tf:
                if m.isfile():
                    out.append((m.name, tf.extractfile(m).read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise SubjectFormatError(tar_path, f"unreadable or truncated tar ({type(e).__name__}: {oneline(e)})") from e
    return out


def _npy_from_bytes(data: bytes, cache: dict) -> np.ndarray:
    """Parse a small ``.npy`` payload (no pickle); headers repeat across samples, so their parse is cached."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy payload")
    major = data[6]
    hlen = int.from_bytes(data[8:10], "little") + 10 if major == 1 else int.from_bytes(data[8:12], "little") + 12
    key = data[:hlen]
    if key not in cache:
        a = np.load(io.BytesIO(data), allow_pickle=False)
        cache[key] = (a.shape, a.dtype, a.flags.f_contiguous and not a.flags.c_contiguous)
        return a
    shape, dtype, fortran = cache[key]
    count = math.prod(shape)
    a = np.frombuffer(data, dtype=dtype, count=count, offset=hlen)
    return a.reshape(shape, order="F" if fortran else "C")


def read_behav_tar(tar_path: Path) -> np.ndarray:
    """All ``*.behav.npy`` rows of one webdataset tar, as an (n, 17) float array in sample-key order."""
    require_file(tar_path, "webdataset tar")
    rows: list[tuple[str, np.ndarray]] = []
    cache: dict = {}
    for name, payload in _tar_members(tar_path):
        base = name.rsplit("/", 1)[-1]
        if not base.endswith(".behav.npy") or base.endswith("_behav.npy"):  # skip past_/future_/olds_behav
            continue
        try:
            a = _npy_from_bytes(payload, cache)
        except (ValueError, OSError, EOFError) as e:
            raise SubjectFormatError(tar_path, f"unreadable behav array ({oneline(e)})", key=name) from e
        if a.shape not in ((1, N_BEHAV_COLS), (N_BEHAV_COLS,)) or a.dtype.kind not in "biuf":
            raise SubjectFormatError(tar_path, key=name, expected=f"(1, {N_BEHAV_COLS}) numeric behav array",
                                     found=f"{a.dtype} {a.shape}")
        rows.append((name[: -len(".behav.npy")], a))
    if not rows:
        raise SubjectFormatError(tar_path, "no trials", expected="<key>.behav.npy members", found="none")
    rows.sort(key=lambda r: r[0])
    return np.stack([r[1].reshape(N_BEHAV_COLS) for r in rows]).astype(np.float64)


def _tar_index(p: Path) -> int:
    try:
        return int(p.stem)
    except ValueError:
        return 1 << 30


def read(path: Path, *, subject: int | None = None, test_set: str = "new_test", **_ignored) -> Subject:
    """Open an NSD subject in the MindEyeV2 layout.

    Parameters
    ----------
    path : Path
        The MindEyeV2 folder, or its ``betas_all_subjXX_fp32_renorm.hdf5``.
    subject : int, optional
        Which subject, when the folder holds several.
    test_set : {"new_test", "test"}
        The test grouping (see module docstring).
    """
    if test_set not in TEST_SETS:
        raise SubjectFormatError(path, "unknown NSD test set", key="test_set", expected=f"one of {TEST_SETS}", found=test_set)
    root, betas_path, subj = _locate(Path(path), subject)
    tag = f"subj{subj:02d}"
    n_rows, n_vox = _betas_shape(betas_path)
    train_tars, test_tar, gtrial, kid_row, session, run, split = _trials(root / "wds" / tag, test_set, n_rows,
                                                                          betas_path)

    img_rows, image_index = np.unique(kid_row, return_inverse=True)  # ascending 73KID
    image_index = image_index.reshape(-1).astype(np.int64)
    sources = [betas_path, *train_tars, test_tar]
    img_path = require_file(root / IMAGES_FILE, "NSD image file")
    imgs = LazyImages(img_path, "images", img_rows)
    sources.append(img_path)

    rois = {"nsd_general": np.ones(n_vox, bool)}
    mpath = root / MASKS_FILE
    if mpath.exists():
        rois = _read_masks(mpath, tag, n_vox)
        sources.append(mpath)

    rows = None if np.array_equal(gtrial, np.arange(n_rows)) else gtrial
    betas = LazyBetas(betas_path, "betas", rows=rows, dtype=np.float16)
    trials = TrialTable(image_index=image_index, session=session, run=run, repeat=repeat_numbers(image_index),
                        split=split.astype(np.int8))
    steps = [
        {"step": "zscore", "scope": "voxel", "statistics": "train", "by": "MindEyeV2 (_renorm file, upstream)"},
        {"step": "test_set", "name": test_set,
         "rule": "all trials of shared1000 images" if test_set == "new_test" else "older MindEyeV2 test set"},
    ]
    s = Subject(
        betas=betas, trials=trials, images=imgs, voxels=VoxelTable.unknown(n_vox), rois=rois,
        stimuli=Stimuli(source_ids=[str(int(r) + 1) for r in img_rows]),
        name=f"nsd-{tag}", format="nsd", path=betas_path,
        provenance=provenance("nsd", sources, steps, dataset={"name": "NSD", "subject": subj, "test_set": test_set,
                                                              "image_ids": "73KID (source_ids)"}),
    )
    return checked(s, betas_path)


def _betas_shape(betas_path: Path) -> tuple[int, int]:
    """(n_rows, n_voxels) of the betas, checked: a 2-D float array, not empty, a contiguous one not truncated."""
    with open_h5(betas_path) as f:
        ds = h5_dataset(f, "betas", betas_path)
        if len(ds.shape) != 2 or not np.issubdtype(ds.dtype, np.floating):
            raise SubjectFormatError(betas_path, key="betas", expected="2-D float array (trials, voxels)",
                                     found=f"{ds.dtype} {tuple(ds.shape)}")
        n_rows, n_vox = (int(s) for s in ds.shape)
        if n_rows == 0 or n_vox == 0:
            raise SubjectFormatError(betas_path, key="betas", expected="at least one trial and voxel", found=f"shape {ds.shape}")
        if ds.chunks is None and ds.compression is None:  # contiguous: the file must hold the whole data block
            off = ds.id.get_offset()
            need = (off or 0) + n_rows * n_vox * ds.dtype.itemsize
            if off is not None and betas_path.stat().st_size < need:
                raise SubjectFormatError(betas_path, "file is truncated", key="betas", expected=f">= {need} bytes",
                                         found=f"{betas_path.stat().st_size} bytes")
    return n_rows, n_vox


def _trials(wds: Path, test_set: str, n_rows: int, betas_path: Path):
    """(train tars, test tar, global trial, image row (73KID - 1), session, run, split) of every trial of the
    webdataset tars, sorted by global trial and checked (fields present, rows inside the betas, no duplicate, no test
    image in a training tar)."""
    train_dir = require_dir(wds / "train", "webdataset train folder")
    train_tars = sorted(train_dir.glob("*.tar"), key=_tar_index)
    if not train_tars:
        raise SubjectFormatError(train_dir, "no training tars", expected="0.tar ... N-1.tar", found="none")
    test_tar = require_file(wds / test_set / "0.tar", f"{test_set} webdataset tar")
    parts, split = [], []
    for t in train_tars:
        b = read_behav_tar(t)
        parts.append((t, b))
        split.append(np.zeros(len(b), np.int8))
    tb = read_behav_tar(test_tar)
    parts.append((test_tar, tb))
    split.append(np.ones(len(tb), np.int8))
    behav = np.concatenate([b for _, b in parts])
    split = np.concatenate(split)
    origin = np.concatenate([np.full(len(b), i) for i, (_, b) in enumerate(parts)])

    def col(c, name):
        v = behav[:, c]
        bad = (v < 0) | (v != np.round(v)) | ~np.isfinite(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SubjectFormatError(parts[origin[i]][0], "missing or invalid trial field (-1 means missing)",
                                     key=f"behav column {c} ({name})", expected="a non-negative integer", found=v[i])
        return v.astype(np.int64)

    gtrial = col(COL_GLOBAL_TRIAL, "global trial")
    kid_row = col(COL_IMAGE, "image index")
    session = col(COL_SESSION, "session")
    run = col(COL_RUN, "run")
    if gtrial.max() >= n_rows:
        i = int(np.flatnonzero(gtrial >= n_rows)[0])
        raise SubjectFormatError(parts[origin[i]][0], "trial points past the betas rows", key="behav column 5 (global trial)",
                                 expected=f"< {n_rows} (rows of {betas_path.name})", found=int(gtrial[i]))
    order = np.argsort(gtrial, kind="stable")
    gtrial, kid_row, session, run, split, origin = (a[order] for a in (gtrial, kid_row, session, run, split, origin))
    dup = np.flatnonzero(np.diff(gtrial) == 0)
    if dup.size:
        i = int(dup[0])
        raise SubjectFormatError(parts[origin[i + 1]][0], "duplicate trial", key="behav column 5 (global trial)",
                                 expected="each global trial once", found=f"trial {int(gtrial[i])} twice")
    shared = behav[order, COL_SHARED]
    leaked = np.flatnonzero((split == 0) & (shared == 1))
    if leaked.size:
        i = int(leaked[0])
        raise SubjectFormatError(parts[origin[i]][0], "a shared1000 (test) image appears in a training tar",
                                 key="behav column 16 (is_shared1000)", expected="0 in train tars", found=1)
    return train_tars, test_tar, gtrial, kid_row, session, run, split


def _read_masks(mpath: Path, tag: str, n_vox: int) -> dict[str, np.ndarray]:
    import h5py

    with open_h5(mpath) as f:
        g = f.get(tag)
        if not isinstance(g, h5py.Group):
            raise SubjectFormatError(mpath, "missing subject group", key=tag, expected=f"group '{tag}'",
                                     found=f"keys {sorted(f.keys())}")
        names = [n for n in ROI_ORDER if n in g] + sorted(n for n in g if n not in ROI_ORDER)
        rois = {}
        for n in names:
            d = g[n]
            if not isinstance(d, h5py.Dataset):
                continue
            try:
                m = d[()]
            except (OSError, ValueError) as e:
                raise SubjectFormatError(mpath, f"cannot read mask ({oneline(e)})", key=f"{tag}/{n}") from e
            rois[n] = check_mask(m, mpath, f"{tag}/{n}", n_vox)
    if not rois:
        raise SubjectFormatError(mpath, "no ROI masks", key=tag, expected=f"datasets {list(ROI_ORDER)}", found="none")
    return rois

