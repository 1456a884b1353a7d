"""BOLD5000 subjects (CSI1–CSI4) from the GLMsingle ROI betas and the stimulus release.

::

    ROOT/
      BOLD5000_GLMsingle_ROI_betas/py/CSI1_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_LHEarlyVis.npy   (trials, voxels)
          ... one file per hemisphere (LH, RH) and ROI (EarlyVis, LOC, OPA, PPA, RSC)
      BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/img_dict.npy          dict image name -> (H, W, 3) image
      BOLD5000_Stimuli/Scene_Stimuli/repeated_stimuli_113_list.txt          the test images
      BOLD5000_Stimuli/Stimuli_Presentation_Lists/CSI1/CSI1_sess01/*run01.txt   one image name per trial

All ROI files of the subject are loaded in sorted order and concatenated along voxels (hemisphere recorded per voxel).
Trials follow the presentation lists, session by session and run by run; a ``rep_`` prefix marks a repeat and is
stripped. Test = every trial of an image on the 113 list (repeats kept; average them with ``--average-test-repeats``),
train = all other trials.

``img_dict.npy`` is a pickled dict. NeuroLens never runs general unpickling: it reads the file with a restricted
loader that accepts only a dict of plain numpy arrays (no other object can be created). Instead of ``img_dict.npy``,
the image files themselves (``Presented_Stimuli/**/<name>``) are read when present. Images of different sizes are
resized to ``image_size`` (default 256), which is recorded in the provenance.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np

from engine.data.readers.assemble import checked, provenance, repeat_numbers
from engine.data.readers.checks import (check_betas, load_npy, oneline, read_image_rgb, require_dir, require_file,
                                        to_uint8_images)
from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable
from engine.errors import SubjectFormatError

BETAS_DIR = Path("BOLD5000_GLMsingle_ROI_betas") / "py"
SCENE_DIR = Path("BOLD5000_Stimuli") / "Scene_Stimuli"
LISTS_DIR = Path("BOLD5000_Stimuli") / "Stimuli_Presentation_Lists"
BETAS_RE = re.compile(r"^CSI(\d)_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_(LH|RH)(\w+)\.npy$")
REPEATED_LIST = "repeated_stimuli_113_list.txt"
ROI_ORDER = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")


def sniff(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / BETAS_DIR).is_dir() and (path / SCENE_DIR).is_dir()


def _numbers(s: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", s)]


def presentation_list(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[Path]]:
    """Image names, session and run of every trial, in chronological order, from ``Stimuli_Presentation_Lists/CSIx``."""
    require_dir(folder, "presentation list folder")
    sessions = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: (_numbers(p.name)[-1:] or [0], p.name))
    names, sess, runs, files = [], [], [], []
    for si, sdir in enumerate(sessions, start=1):
        run_files = sorted(sdir.glob("*.txt"), key=lambda p: (_numbers(p.stem)[-1:] or [0], p.name))
        for ri, rf in enumerate(run_files, start=1):
            try:
                lines = [ln.strip() for ln in rf.read_text().splitlines() if ln.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise SubjectFormatError(rf, f"unreadable presentation list ({oneline(e)})") from e
            for ln in lines:
                names.append(ln[4:] if ln.startswith("rep_") else ln)
                sess.append(si)
                runs.append(ri)
            files.append(rf)
    if not names:
        raise SubjectFormatError(folder, "no trials in the presentation lists", expected="<session>/<run>.txt files",
                                 found="none")
    return names, np.asarray(sess, np.int64), np.asarray(runs, np.int64), files


class _ArrayDictUnpickler(pickle.Unpickler):
    """Only rebuilds numpy arrays and dtypes (what ``np.save`` of a dict of arrays holds); refuses everything else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_image_dict(path: Path) -> dict[str, np.ndarray]:
    """Read ``img_dict.npy`` (a dict of arrays saved with ``np.save``) with the restricted loader."""
    require_file(path, "img_dict.npy")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if dtype != np.dtype(object) or shape != ():
                raise SubjectFormatError(path, expected="a saved dict (0-d object array)", found=f"{dtype} {shape}")
            obj = _ArrayDictUnpickler(io.BufferedReader(f)).load()
    except SubjectFormatError:
        raise
    except (pickle.UnpicklingError, ValueError, EOFError, OSError, AttributeError, TypeError, IndexError) as e:
        raise SubjectFormatError(path, f"not a dict of image arrays ({type(e).__name__}: {oneline(e)})") from e
    d = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in d.items()):
        raise SubjectFormatError(path, expected="dict image name -> image array", found=type(d).__name__)
    return d


def _image_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file()}


def _load_image_file(p: Path) -> np.ndarray:
    return read_image_rgb(p)


def read(path: Path, *, subject: int | None = None, image_size: int = 256, **_ignored) -> Subject:
    """Open a BOLD5000 subject.

    Parameters
    ----------
    path : Path
        The folder holding ``BOLD5000_GLMsingle_ROI_betas`` and ``BOLD5000_Stimuli``.
    subject : int, optional
        CSI number (1–4) when several are present.
    image_size : int
        Side length images are resized to when their sizes differ.
    """
    root = require_dir(Path(path), "BOLD5000 folder")
    files, subject = _roi_files(root, subject)
    betas, hemi, rois = _betas(files[subject])
    n_rows, n_vox = betas.shape
    lists_dir = root / LISTS_DIR / f"CSI{subject}"
    tnames, session, run, list_files = presentation_list(lists_dir)
    if len(tnames) != n_rows:
        raise SubjectFormatError(lists_dir, "presentation lists and betas disagree on the number of trials",
                                 expected=f"{n_rows} trials (rows of the betas files)", found=f"{len(tnames)} listed")
    rep_path = require_file(root / SCENE_DIR / REPEATED_LIST, "repeated-image list")
    repeated = {ln.strip() for ln in rep_path.read_text(errors="replace").splitlines() if ln.strip()}
    repeated = {r[4:] if r.startswith("rep_") else r for r in repeated}

    uniq = sorted(set(tnames))
    sources = [p for _, _, p in files[subject]] + list_files + [rep_path]
    steps: list[dict] = []
    images = _images(root, uniq, image_size, sources, steps)

    lookup = {n: i for i, n in enumerate(uniq)}
    image_index = np.asarray([lookup[n] for n in tnames], np.int64)
    split = np.asarray([1 if n in repeated else 0 for n in tnames], np.int8)
    if not split.any():
        raise SubjectFormatError(rep_path, "no test trials", expected="names of presented images", found="none match")
    trials = TrialTable(image_index=image_index, session=session, run=run, repeat=repeat_numbers(image_index), split=split)
    vox = VoxelTable.unknown(n_vox)
    vox = VoxelTable(hemi=hemi, vertex=vox.vertex, ijk=vox.ijk, noise_ceiling=vox.noise_ceiling)
    s = Subject(betas=betas, trials=trials, images=images, voxels=vox, rois=rois, stimuli=Stimuli(source_ids=uniq),
                name=f"bold5000-CSI{subject}", format="bold5000", path=root,
                provenance=provenance("bold5000", sources, steps, dataset={"name": "BOLD5000", "subject": f"CSI{subject}"}))
    return checked(s, root)


def _roi_files(root: Path, subject: int | None):
    """(CSI number -> [(hemisphere, ROI, file)], the subject to read): the GLMsingle ROI betas files."""
    bdir = require_dir(root / BETAS_DIR, "GLMsingle ROI betas folder")
    files: dict[int, list[tuple[str, str, Path]]] = {}
    for p in sorted(bdir.iterdir()):
        m = BETAS_RE.match(p.name)
        if m:
            files.setdefault(int(m.group(1)), []).append((m.group(2), m.group(3), p))
    if not files:
        raise SubjectFormatError(bdir, "no GLMsingle ROI betas",
                                 expected="CSIn_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{LH,RH}<ROI>.npy", found="none")
    if subject is None:
        if len(files) > 1:
            raise SubjectFormatError(bdir, "several BOLD5000 subjects; choose one with subject=N",
                                     expected="one CSI subject", found=f"CSI{sorted(files)}")
        subject = next(iter(files))
    if subject not in files:
        raise SubjectFormatError(bdir, f"no betas for CSI{subject}", expected=f"CSI{sorted(files)}", found=subject)
    return files, subject


def _betas(subject_files: list[tuple[str, str, Path]]):
    """(betas (n_trials, n_voxels), hemisphere per voxel, ROI masks): the subject's ROI files side by side."""
    blocks, hemis, roi_of = [], [], []
    n_rows = None
    for hemi, roi, p in subject_files:  # sorted by file name: LH before RH, ROIs alphabetically
        a = load_npy(p, mmap=True)
        if n_rows is not None and a.ndim == 2 and a.shape[0] != n_rows:
            raise SubjectFormatError(p, "ROI files of one subject disagree on the number of trials",
                                     expected=f"{n_rows} rows like {subject_files[0][2].name}", found=f"{a.shape[0]} rows")
        a = check_betas(a, p, "(trials, voxels) array")
        n_rows = a.shape[0]
        blocks.append(a)
        hemis.append(np.full(a.shape[1], 0 if hemi == "LH" else 1, np.int8))
        roi_of += [roi] * a.shape[1]
    betas = np.concatenate(blocks, axis=1).astype(np.float32, copy=False)
    roi_of = np.asarray(roi_of)
    names = [r for r in ROI_ORDER if r in set(roi_of)] + sorted(set(roi_of) - set(ROI_ORDER))
    rois = {r: roi_of == r for r in names}
    return betas, np.concatenate(hemis), rois


def _images(root: Path, uniq: list[str], image_size: int, sources: list, steps: list) -> np.ndarray:
    """The presented images named ``uniq`` (uint8, from ``img_dict.npy`` or the image files), resized to ``image_size``
    when their sizes differ; the files read go to ``sources``, the resize to ``steps``."""
    pres = root / SCENE_DIR / "Presented_Stimuli"
    dict_path = pres / "img_dict.npy"
    if dict_path.exists():
        store = load_image_dict(dict_path)
        sources.append(dict_path)
        missing = [n for n in uniq if n not in store]
        if missing:
            raise SubjectFormatError(dict_path, "trial points at a missing image", key=missing[0],
                                     expected="an entry for every presented image", found=f"{len(missing)} missing")
        raw = [store[n] for n in uniq]
        origin = dict_path
    else:
        found = _image_files(require_dir(pres, "Presented_Stimuli folder"))
        missing = [n for n in uniq if n not in found]
        if missing:
            raise SubjectFormatError(pres, "trial points at a missing image", key=missing[0],
                                     expected="img_dict.npy or an image file for every presented image",
                                     found=f"{len(missing)} missing")
        raw = [_load_image_file(found[n]) for n in uniq]
        origin = pres
    shapes = {np.asarray(r).shape[:2] for r in raw}
    if len(shapes) > 1:
        raw = [_resize(np.asarray(r), image_size, origin, n) for r, n in zip(raw, uniq)]
        steps.append({"step": "resize_images", "size": image_size, "reason": "presented images differ in size"})
    images = np.concatenate([to_uint8_images(np.asarray(r)[None], origin, n) for r, n in zip(raw, uniq)])
    return images


def _resize(a: np.ndarray, size: int, origin: Path, name: str) -> np.ndarray:
    from PIL import Image

    u8 = to_uint8_images(a[None], origin, name)[0]
    return np.asarray(Image.fromarray(u8).resize((size, size), Image.BICUBIC))
