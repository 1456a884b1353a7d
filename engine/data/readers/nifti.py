r"""Volumetric subjects from NIfTI files: betas, a brain mask and/or ROI label image, and a BIDS-style trial table.

::

    FOLDER/
      betas.nii.gz            4-D (X, Y, Z, n_trials) betas, or a folder betas/ of NIfTI files read in sorted order
                              (each 3-D file is one trial, each 4-D file contributes its volumes, e.g. one per session)
      mask.nii.gz             brain mask (non-zero = voxel kept)                      \ at least one of the two
      labels.nii.gz           ROI label image (integer k > 0 = ROI k)                 /
      labels.tsv              (optional) columns index, name  (or labels.json {"1": "V1", ...})
      events.tsv              one row per trial, in betas order: stim_file (required), split (train/test),
                              session, run (optional)
      stimuli/...             the image files named by stim_file (relative to the TSV's folder or stimuli/)

Every file can also be named with the reader options ``betas``, ``mask``, ``labels``, ``label_names``, ``events``.
Images and masks must share the betas' grid: shape and affine are compared, never silently resampled. The data block
is read on import, so truncated files are caught. With data in MNI space (``space="MNI152"``, or an sform code of 4 in
the header) each voxel is assigned the nearest fsaverage5 vertex (nilearn's bundled pial mesh) within
``max_surface_mm``, which fills the voxel table's ``hemi``/``vertex`` for surface views.
"""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np

from engine.data.readers.assemble import checked, provenance, repeat_numbers
from engine.data.readers.checks import check_declared_size, oneline, read_image_rgb, require_dir, require_file
from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable
from engine.errors import SubjectFormatError

NII = (".nii", ".nii.gz")


def _is_nii(p: Path) -> bool:
    return p.name.endswith(NII)


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return _is_nii(path)
    if not path.is_dir():
        return False
    has_nii = any(_is_nii(p) for p in path.iterdir()) or (path / "betas").is_dir()
    return has_nii and any(p.suffix == ".tsv" for p in path.iterdir())


def load_nifti(p: Path, *, what: str = "NIfTI image", dtype=None):
    """Load a NIfTI header + data block (forces the read: nibabel is lazy). Returns (data, affine, header).

    ``dtype`` (e.g. float32 for betas) applies the header's scaling in that dtype, never a float64 copy.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    require_file(p, what)
    try:
        img = nib.load(str(p))
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error) as e:
        raise SubjectFormatError(p, f"not a readable {what} ({type(e).__name__}: {oneline(e)})") from e
    check_declared_size(p, None, img.shape, dtype or img.get_data_dtype())
    if np.dtype(img.get_data_dtype()).kind == "c":
        raise SubjectFormatError(p, "complex-valued volume", expected="real values", found=str(img.get_data_dtype()))
    try:
        data = np.asarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise SubjectFormatError(p, f"data block is truncated or corrupt ({type(e).__name__}: {oneline(e)})") from e
    aff = img.affine
    if aff is None or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise SubjectFormatError(p, "bad affine", expected="an invertible 4×4 affine", found=str(aff))
    return data, np.asarray(aff, np.float64), img.header


def _pick(folder: Path, option, patterns: list[str], what: str, required: bool = True) -> Path | None:
    if option:
        p = Path(option)
        return p if p.is_absolute() else folder / p
    for pat in patterns:
        hits = sorted(folder.glob(pat))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise SubjectFormatError(folder, f"several candidate {what} files; name one with the reader option",
                                     expected=f"one file matching {pat}", found=[h.name for h in hits][:5])
    if required:
        raise SubjectFormatError(folder, f"missing {what}", expected=f"a file matching {patterns}", found="none")
    return None


def _read_betas(src: Path) -> tuple[list[np.ndarray], np.ndarray, object, list[Path]]:
    """Volumes as a list of 4-D float32 blocks, the shared affine and header, and the files read."""
    files = sorted(p for p in src.iterdir() if _is_nii(p)) if src.is_dir() else [src]
    if not files:
        raise SubjectFormatError(src, "no NIfTI betas", expected="*.nii or *.nii.gz files", found="none")
    blocks, aff0, hdr0, shape0 = [], None, None, None
    for p in files:
        data, aff, hdr = load_nifti(p, what="betas image", dtype=np.float32)
        if data.ndim == 3:
            data = data[..., None]
        if data.ndim != 4:
            raise SubjectFormatError(p, expected="3-D (one trial) or 4-D (X, Y, Z, trials) numeric image",
                                     found=f"{data.ndim}-D {data.dtype}")
        if shape0 is None:
            aff0, hdr0, shape0 = aff, hdr, data.shape[:3]
        elif data.shape[:3] != shape0 or not np.allclose(aff, aff0, atol=1e-3):
            raise SubjectFormatError(p, "betas files do not share one grid", expected=f"shape {shape0} and the same affine",
                                     found=f"shape {data.shape[:3]}")
        blocks.append(data)
    return blocks, aff0, hdr0, files


def _check_grid(p: Path, data, aff, shape, aff0, what: str) -> None:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape[:3] != tuple(shape) or data.ndim != 3:
        raise SubjectFormatError(p, f"{what} does not match the betas grid", expected=f"3-D shape {tuple(shape)}",
                                 found=f"shape {data.shape}")
    if not np.allclose(aff, aff0, atol=1e-3):
        raise SubjectFormatError(p, f"{what} affine does not match the betas affine (no silent resampling)",
                                 expected=np.round(aff0, 3).tolist(), found=np.round(aff, 3).tolist())


def _label_names(p: Path | None) -> dict[int, str]:
    if p is None:
        return {}
    require_file(p, "label names file")
    try:
        if p.suffix == ".json":
            d = json.loads(p.read_text(encoding="utf-8-sig"))
            if not isinstance(d, dict):
                raise SubjectFormatError(p, expected='a JSON object {"1": "V1", ...}', found=type(d).__name__)
            return {int(k): str(v) for k, v in d.items()}
        with p.open(newline="", encoding="utf-8-sig") as f:  # Excel saves a BOM and CRLF line ends
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows or not {"index", "name"} <= set(rows[0]):
            raise SubjectFormatError(p, "missing columns", expected="TSV columns index, name",
                                     found=sorted(rows[0]) if rows else "no rows")
        return {int(r["index"]): r["name"] for r in rows}
    except SubjectFormatError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SubjectFormatError(p, f"unreadable label names ({oneline(e)})") from e


def read_events(p: Path) -> list[dict]:
    require_file(p, "trial table (TSV)")
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:  # Excel saves a BOM and CRLF line ends
            rows = [{(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items()}
                    for r in csv.DictReader(f, delimiter="\t")]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SubjectFormatError(p, f"unreadable TSV ({oneline(e)})") from e
    if not rows:
        raise SubjectFormatError(p, "no trials", expected="one row per trial", found="0 rows")
    if "stim_file" not in rows[0]:
        raise SubjectFormatError(p, "missing column", key="stim_file", expected="BIDS column stim_file",
                                 found=sorted(k for k in rows[0] if k))
    return rows


def _int_column(rows, name, p: Path) -> np.ndarray:
    try:
        return np.asarray([int(r.get(name) or 1) for r in rows], np.int64)
    except ValueError as e:
        raise SubjectFormatError(p, key=name, expected="integers", found=str(e)) from e


def read(path: Path, *, betas=None, mask=None, labels=None, label_names=None, events=None, stimuli=None,
         space: str | None = None, image_size: int = 256, max_surface_mm: float = 6.0, **_ignored) -> Subject:
    """Open a NIfTI subject folder (see module docstring for the layout and options)."""
    path = Path(path)
    folder = path.parent if path.is_file() else require_dir(path, "NIfTI subject folder")
    bsrc = Path(betas) if betas else (path if path.is_file() else None)
    if bsrc is None:
        bsrc = folder / "betas" if (folder / "betas").is_dir() else _pick(folder, None, ["betas*.nii*", "*bold*.nii*"], "betas image")
    elif not bsrc.is_absolute():
        bsrc = folder / bsrc
    blocks, aff, hdr, bfiles = _read_betas(bsrc)
    shape = blocks[0].shape[:3]
    sources = list(bfiles)
    keep, lab, mpath, lpath = _voxel_selection(folder, mask, labels, shape, aff, sources)

    ijk = np.argwhere(keep).astype(np.int32)  # C order, the order voxels are stored in
    n_vox = len(ijk)
    rows = [b[keep].T.astype(np.float32) for b in blocks]  # (volumes, n_vox) per file
    X = np.concatenate(rows)
    del rows
    from engine.data.readers.checks import check_finite_rows

    check_finite_rows(X, bfiles[0] if len(bfiles) == 1 else bsrc, "betas (inside the mask)")
    rois = _rois(folder, label_names, lab, keep, lpath, sources)
    if mpath is not None:
        rois = {"brain": np.ones(n_vox, bool), **rois}

    epath = _pick(folder, events, ["*events.tsv", "trials.tsv", "*.tsv"], "trial table (events.tsv)")
    ev = read_events(epath)
    sources.append(epath)
    if len(ev) != X.shape[0]:
        raise SubjectFormatError(epath, "trial table and betas disagree on the number of trials",
                                 expected=f"{X.shape[0]} rows (volumes in the betas)", found=f"{len(ev)} rows")
    steps: list[dict] = []
    images, uniq, image_index = _stimulus_images(folder, epath, ev, stimuli, image_size, steps)
    split = _split(ev, epath, steps)
    trials = TrialTable(image_index=image_index, session=_int_column(ev, "session", epath), run=_int_column(ev, "run", epath),
                        repeat=repeat_numbers(image_index), split=split)

    sform_code = int(hdr["sform_code"]) if "sform_code" in hdr else 0
    space = space or ("MNI152" if sform_code == 4 else "native")
    hemi = np.full(n_vox, -1, np.int8)
    vertex = np.full(n_vox, -1, np.int32)
    if space.upper().startswith("MNI"):
        hemi, vertex = surface_assignment(ijk, aff, max_surface_mm)
        steps.append({"step": "surface_projection", "mesh": "fsaverage5 pial (nilearn)", "rule": "nearest vertex",
                      "max_mm": max_surface_mm, "n_assigned": int(np.count_nonzero(vertex >= 0))})
    vox = VoxelTable(hemi=hemi, vertex=vertex, ijk=ijk, noise_ceiling=np.full(n_vox, np.nan, np.float32))
    s = Subject(betas=X, trials=trials, images=images, voxels=vox, rois=rois, stimuli=Stimuli(source_ids=uniq),
                name=folder.name, format="nifti", path=folder,
                provenance=provenance("nifti", sources, steps),
                volume={"shape": [int(v) for v in shape], "affine": aff.tolist(), "space": space})
    return checked(s, folder)


def _voxel_selection(folder: Path, mask, labels, shape, aff, sources: list):
    """(voxels kept (shape, bool), the label image or None, mask path, label path): the brain mask, else the labelled
    voxels. The files read are appended to ``sources``."""
    mpath = _pick(folder, mask, ["*mask*.nii*", "*brain*.nii*"], "brain mask", required=False)
    lpath = _pick(folder, labels, ["*label*.nii*", "*roi*.nii*", "*atlas*.nii*", "*dseg*.nii*"], "label image", required=False)
    if mpath is None and lpath is None:
        raise SubjectFormatError(folder, "missing brain mask or ROI label image", expected="mask*.nii.gz or labels*.nii.gz",
                                 found="neither")
    keep = np.ones(shape, bool)
    if mpath is not None:
        m, maff, _ = load_nifti(mpath, what="mask image")
        _check_grid(mpath, m, maff, shape, aff, "mask")
        keep = np.asarray(m).reshape(shape) != 0
        if not keep.any():
            raise SubjectFormatError(mpath, "empty mask", expected="at least one non-zero voxel", found="0 voxels")
        sources.append(mpath)
    lab = None
    if lpath is not None:
        lab, laff, _ = load_nifti(lpath, what="label image")
        _check_grid(lpath, lab, laff, shape, aff, "label image")
        lab = np.asarray(lab).reshape(shape)
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
                raise SubjectFormatError(lpath, expected="integer labels", found=f"{lab.dtype} with fractional values")
            lab = lab.astype(np.int64)
        if mpath is None:
            keep = lab > 0
            if not keep.any():
                raise SubjectFormatError(lpath, "empty label image", expected="labels > 0", found="none")
        sources.append(lpath)
    return keep, lab, mpath, lpath


def _rois(folder: Path, label_names, lab, keep, lpath, sources: list) -> dict[str, np.ndarray]:
    """ROI name -> mask over the kept voxels, one per label (named from the label-names file when there is one)."""
    rois: dict[str, np.ndarray] = {}
    if lab is None:
        return rois
    names_path = _pick(folder, label_names, ["*label*.tsv", "*label*.json", "*roi*.tsv", "*roi*.json"],
                       "label names", required=False)
    names = _label_names(names_path)
    if names_path:
        sources.append(names_path)
    vl = lab[keep]
    present = sorted(int(v) for v in np.unique(vl) if v > 0)
    for k in sorted(set(present) | set(names)):
        nm = names.get(k, f"label_{k}")
        m = vl == k
        if not m.any():
            raise SubjectFormatError(lpath, "empty ROI", key=nm, expected="at least one voxel inside the mask",
                                     found="0 voxels")
        rois[nm] = m
    return rois


def _stimulus_images(folder: Path, epath: Path, ev: list[dict], stimuli, image_size: int, steps: list):
    """(images (n_images, H, W, 3), their file names, the image of each trial) from the trial table's ``stim_file``;
    images of different sizes are resized to ``image_size`` (a step recorded in ``steps``)."""
    stim_names = [r["stim_file"].strip() if r["stim_file"] else "" for r in ev]
    uniq = sorted(set(stim_names))
    sdir = Path(stimuli) if stimuli else None
    if sdir is not None and not sdir.is_absolute():
        sdir = folder / sdir
    images_raw = []
    for n in uniq:
        cands = [d / n for d in ([sdir] if sdir else [epath.parent, folder / "stimuli"])]
        hit = next((c for c in cands if n and c.is_file()), None)
        if hit is None:
            raise SubjectFormatError(epath, "trial points at a missing image", key="stim_file",
                                     expected="an existing image file", found=repr(n))
        images_raw.append(_load_image(hit))
    if len({im.shape[:2] for im in images_raw}) > 1:
        from PIL import Image

        images_raw = [np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BICUBIC)) for im in images_raw]
        steps.append({"step": "resize_images", "size": image_size, "reason": "stimulus images differ in size"})
    images = np.stack(images_raw)
    lookup = {n: i for i, n in enumerate(uniq)}
    return images, uniq, np.asarray([lookup[n] for n in stim_names], np.int64)


def _split(ev: list[dict], epath: Path, steps: list) -> np.ndarray:
    """0 (train) / 1 (test) per trial from the ``split`` column; without one every trial trains (recorded in ``steps``)."""
    if "split" in ev[0]:
        vals = [(r.get("split") or "").strip().lower() for r in ev]
        bad = [v for v in vals if v not in ("train", "test")]
        if bad:
            raise SubjectFormatError(epath, key="split", expected="train or test", found=repr(bad[0]))
        return np.asarray([v == "test" for v in vals], np.int8)
    steps.append({"step": "split", "rule": "no split column: every trial is a training trial"})
    return np.zeros(len(ev), np.int8)


def _load_image(p: Path) -> np.ndarray:
    return read_image_rgb(p)


def surface_assignment(ijk: np.ndarray, affine: np.ndarray, max_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest fsaverage5 pial vertex (per hemisphere) of each voxel centre in MNI mm; -1 beyond ``max_mm``."""
    from nilearn.datasets import load_fsaverage
    from scipy.spatial import cKDTree

    mesh = load_fsaverage("fsaverage5")["pial"]
    xyz = ijk.astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]
    best_d = np.full(len(ijk), np.inf)
    hemi = np.full(len(ijk), -1, np.int8)
    vertex = np.full(len(ijk), -1, np.int32)
    for h, part in enumerate(("left", "right")):
        d, v = cKDTree(np.asarray(mesh.parts[part].coordinates)).query(xyz)
        better = (d < best_d) & (d <= max_mm)
        best_d[better] = d[better]
        hemi[better] = h
        vertex[better] = v[better]
    return hemi, vertex
