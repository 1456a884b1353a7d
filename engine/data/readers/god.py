"""GOD (Kamitani) subjects in the npz layout MinD-Vis uses.

::

    FOLDER/
      sbj_3.npz          arr_0 train fMRI (1200, n_voxels), one row per training trial
                         arr_1 test fMRI, single trials (50 images × 35 repeats, n_voxels)
                         arr_2 test fMRI averaged over repeats (50, n_voxels), row k = test image k
                         arr_3 train labels: row into images_256.npz['train_images'] for each arr_0 row
                         arr_4 test labels: row into 'test_images' for each arr_1 row
                         arr_5, arr_6 per-voxel noise ceiling and SNR
                         other keys: boolean ROI masks over the voxels (V1…V4, LOC, FFA, PPA, LVC, HVC, VC)
      images_256.npz     train_images, test_images: uint8 (N, H, W, 3)

The subject's images are ``train_images`` followed by ``test_images``. Test trials are the single trials of ``arr_1``
(``test="single"``, default: repeats kept, average them later with ``--average-test-repeats``) or the averaged
``arr_2`` rows (``test="averaged"``, as MinD-Vis evaluates). Sessions and runs are not in the file (all 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from engine.data.readers.assemble import checked, provenance, repeat_numbers
from engine.data.readers.checks import (check_betas, check_index_range, check_int_vector, check_mask, describe, load_npz,
                                        require_dir, require_file, require_key, to_uint8_images)
from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable
from engine.errors import SubjectFormatError

SUBJECT_RE = re.compile(r"^sbj_(\d+)\.npz$")
IMAGES_FILE = "images_256.npz"
DATA_KEYS = tuple(f"arr_{i}" for i in range(7))
ROI_ORDER = ("VC", "LVC", "HVC", "V1", "V2", "V3", "V4", "LOC", "FFA", "PPA")  # general first


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return SUBJECT_RE.match(path.name) is not None
    return path.is_dir() and any(SUBJECT_RE.match(p.name) for p in path.iterdir()) and (path / IMAGES_FILE).is_file()


def _locate(path: Path, subject: int | None) -> tuple[Path, int]:
    if path.is_file():
        m = SUBJECT_RE.match(path.name)
        if not m:
            raise SubjectFormatError(path, "not a GOD subject file", expected="sbj_N.npz", found=path.name)
        return path, int(m.group(1))
    require_dir(path, "GOD folder")
    files = {int(m.group(1)): p for p in path.iterdir() if (m := SUBJECT_RE.match(p.name))}
    if not files:
        raise SubjectFormatError(path, "no GOD subject file", expected="sbj_N.npz", found="none")
    if subject is None:
        if len(files) > 1:
            raise SubjectFormatError(path, "several GOD subjects; choose one with subject=N", expected="one sbj_N.npz",
                                     found=f"subjects {sorted(files)}")
        subject = next(iter(files))
    if subject not in files:
        raise SubjectFormatError(path, f"no sbj_{subject}.npz", expected=f"one of {sorted(files)}", found=subject)
    return files[subject], subject


def read(path: Path, *, subject: int | None = None, test: str = "single", images: str | Path | None = None,
         **_ignored) -> Subject:
    """Open a GOD subject.

    Parameters
    ----------
    path : Path
        ``sbj_N.npz`` or its folder.
    subject : int, optional
        Which ``sbj_N`` when the folder holds several.
    test : {"single", "averaged"}
        Single test trials (``arr_1``, with repeats) or repeat-averaged rows (``arr_2``).
    images : Path, optional
        ``images_256.npz``; defaults to the one beside the subject file.
    """
    path = Path(path)
    if test not in ("single", "averaged"):
        raise SubjectFormatError(path, "unknown GOD test option", key="test", expected="single or averaged", found=test)
    spath, subj = _locate(path, subject)
    d = load_npz(spath)
    for k in ("arr_0", "arr_1", "arr_2", "arr_3", "arr_4"):
        require_key(d, k, spath)
    train = check_betas(d["arr_0"], spath, "arr_0")
    n_vox = train.shape[1]
    test_single = check_betas(d["arr_1"], spath, "arr_1", n_cols=n_vox)
    test_avg = check_betas(d["arr_2"], spath, "arr_2", n_cols=n_vox)
    train_lab = check_int_vector(d["arr_3"], spath, "arr_3", n=train.shape[0])
    test_lab = check_int_vector(d["arr_4"], spath, "arr_4", n=test_single.shape[0])

    ipath = require_file(Path(images) if images else spath.parent / IMAGES_FILE, "GOD image file (images_256.npz)")
    imgs = load_npz(ipath)
    tr_img = to_uint8_images(require_key(imgs, "train_images", ipath), ipath, "train_images")
    te_img = to_uint8_images(require_key(imgs, "test_images", ipath), ipath, "test_images")
    if tr_img.shape[1:] != te_img.shape[1:]:
        raise SubjectFormatError(ipath, "train and test images differ in size", key="test_images",
                                 expected=f"(N, {tr_img.shape[1]}, {tr_img.shape[2]}, 3)", found=describe(te_img))
    n_tr_img, n_te_img = len(tr_img), len(te_img)
    check_index_range(train_lab, n_tr_img, spath, "arr_3", "training image")
    check_index_range(test_lab, n_te_img, spath, "arr_4", "test image")
    if test_avg.shape[0] != n_te_img:
        raise SubjectFormatError(spath, "averaged test rows do not match the test images", key="arr_2",
                                 expected=f"{n_te_img} rows (one per test image)", found=describe(test_avg))

    steps: list[dict] = []
    noise = _noise_ceiling(d, spath, n_vox, steps)

    roi_keys = [k for k in d if k not in DATA_KEYS]
    names = [n for n in ROI_ORDER if n in roi_keys] + sorted(n for n in roi_keys if n not in ROI_ORDER)
    rois = {n: check_mask(d[n], spath, n, n_vox) for n in names}
    if not rois:
        rois = {"all": np.ones(n_vox, bool)}

    if test == "single":
        tbetas, timg = test_single, test_lab
    else:
        tbetas, timg = test_avg, np.arange(n_te_img)
        steps.append({"step": "average_test_repeats", "by": "GOD release (arr_2)", "n_repeats": "all"})
    betas = np.concatenate([train, tbetas.astype(train.dtype, copy=False)])
    image_index = np.concatenate([train_lab, timg + n_tr_img]).astype(np.int64)
    split = np.r_[np.zeros(len(train), np.int8), np.ones(len(tbetas), np.int8)]
    n = len(betas)
    trials = TrialTable(image_index=image_index, session=np.ones(n, np.int64), run=np.ones(n, np.int64),
                        repeat=repeat_numbers(image_index), split=split)
    vox = VoxelTable.unknown(n_vox)
    vox = VoxelTable(hemi=vox.hemi, vertex=vox.vertex, ijk=vox.ijk, noise_ceiling=noise)
    s = Subject(betas=betas, trials=trials, images=np.concatenate([tr_img, te_img]), voxels=vox, rois=rois,
                stimuli=Stimuli(source_ids=[f"train:{i}" for i in range(n_tr_img)] + [f"test:{i}" for i in range(n_te_img)]),
                name=f"god-sbj{subj}", format="god", path=spath,
                provenance=provenance("god", [spath, ipath], steps,
                                      dataset={"name": "GOD", "subject": subj, "test": test}))
    return checked(s, spath)


def _noise_ceiling(d, spath: Path, n_vox: int, steps: list) -> np.ndarray:
    """Per-voxel noise ceiling from ``arr_5`` as a fraction (NaN when absent); percent values are converted (a step
    recorded in ``steps``)."""
    if "arr_5" not in d:
        return np.full(n_vox, np.nan, np.float32)
    nc = np.asarray(d["arr_5"], dtype=np.float64).reshape(-1)
    if nc.shape != (n_vox,):
        raise SubjectFormatError(spath, "noise ceiling does not match the voxels", key="arr_5",
                                 expected=f"({n_vox},)", found=describe(d["arr_5"]))
    finite = nc[np.isfinite(nc)]
    if finite.size and finite.max() > 1.0 and finite.max() <= 100.0:
        nc = nc / 100.0  # stored in percent
        steps.append({"step": "noise_ceiling_units", "from": "percent", "to": "fraction"})
    return nc.astype(np.float32)
