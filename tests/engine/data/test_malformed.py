"""The malformed-input corpus: every bad file gives exit status 2 and one clear line naming the file, no traceback.

Each case copies a valid fixture dataset (written in the real layout by ``fixtures.py``), breaks one thing, and runs
``neurolens inspect`` or ``neurolens import`` on it in-process; a few run through a subprocess as a user would.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from engine.cli.main import main
from tests.engine.data import fixtures as F


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    b = tmp_path_factory.mktemp("malformed-base")
    F.write_nsd(b / "nsd")
    F.write_god(b / "god")
    F.write_bold5000(b / "b5")
    F.write_nifti(b / "nii")
    for kind in ("npz", "mat5", "mat73", "h5"):
        F.write_arrays(b / f"arr_{kind}", kind)
    return b


# --- helpers that break things ---------------------------------------------------------------------------------------
def truncate(p: Path, frac: float = 0.5) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * frac)])


def h5_replace(p: Path, key: str, value) -> None:
    with h5py.File(p, "a") as f:
        if key in f:
            del f[key]
        f.create_dataset(key, data=value)


def npz_edit(p: Path, **changes) -> None:
    with np.load(p, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    np.savez(p, **d)


def tar_rows(p: Path) -> list[np.ndarray]:
    rows = []
    with tarfile.open(p) as tf:
        for m in sorted(tf.getmembers(), key=lambda m: m.name):
            if m.name.endswith(".behav.npy") and "_behav" not in m.name:
                rows.append(np.load(io.BytesIO(tf.extractfile(m).read())).reshape(17))
    return rows


def edit_behav(p: Path, row: int, col: int, value: float) -> None:
    rows = tar_rows(p)
    rows[row][col] = value
    F.write_wds_tar(p, rows)


NSD_BETAS = "betas_all_subj01_fp32_renorm.hdf5"
NSD_TRAIN0 = "wds/subj01/train/0.tar"
NSD_TEST = "wds/subj01/new_test/0.tar"
B5_LH = "BOLD5000_GLMsingle_ROI_betas/py/CSI1_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_LHEarlyVis.npy"
B5_DICT = "BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/img_dict.npy"
B5_REP = "BOLD5000_Stimuli/Scene_Stimuli/repeated_stimuli_113_list.txt"
B5_RUN = "BOLD5000_Stimuli/Stimuli_Presentation_Lists/CSI1/CSI1_sess01/CSI_sess01_run01.txt"


def _nsd_nan(d):
    with h5py.File(d / NSD_BETAS, "a") as f:
        f["betas"][5, 3] = np.nan


def _nsd_mask(d, name, value):
    with h5py.File(d / "brain_region_masks.hdf5", "a") as f:
        del f[f"subj01/{name}"]
        f[f"subj01/{name}"] = value


def _nsd_dup(d):
    rows = tar_rows(d / NSD_TRAIN0)
    F.write_wds_tar(d / "wds/subj01/train/1.tar", tar_rows(d / "wds/subj01/train/1.tar") + [rows[0]])


def _nsd_behav_shape(d):
    with tarfile.open(d / NSD_TRAIN0, "a") as tf:
        b = io.BytesIO()
        np.save(b, np.zeros((2, 5)))
        info = tarfile.TarInfo("sample999999999.behav.npy")
        info.size = len(b.getvalue())
        tf.addfile(info, io.BytesIO(b.getvalue()))


def _nsd_leak(d):
    test0 = tar_rows(d / NSD_TEST)[0]
    rows = tar_rows(d / NSD_TRAIN0)
    F.write_wds_tar(d / NSD_TRAIN0, rows)
    t = tar_rows(d / NSD_TEST)[1:]
    F.write_wds_tar(d / NSD_TEST, t)
    F.write_wds_tar(d / "wds/subj01/train/2.tar", tar_rows(d / "wds/subj01/train/2.tar") + [test0])


def _god_obj(d):
    with np.load(d / "sbj_3.npz") as z:
        dd = {k: z[k] for k in z.files}
    dd["arr_5"] = np.array([{"a": 1}], dtype=object)
    np.savez(d / "sbj_3.npz", **dd)


def _npy_object_bytes(obj) -> bytes:
    """An .npy holding a pickled 0-d object array of ``obj``, as np.save writes a dict (the img_dict.npy layout)."""
    arr = np.empty((), dtype=object)
    arr[()] = obj
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=True)
    return b.getvalue()


def _b5_missing_image(d):
    p = d / B5_DICT
    arr = np.empty((), dtype=object)
    from engine.data.readers.bold5000 import load_image_dict

    dd = load_image_dict(p)
    dd.pop(sorted(dd)[0])
    arr[()] = dd
    np.save(p, arr, allow_pickle=True)


def _nii_save(d, name, arr, aff=None):
    import nibabel as nib

    if aff is None:
        aff = nib.load(str(d / "mask.nii.gz")).affine
    nib.save(nib.Nifti1Image(arr, aff), str(d / name))


def _nii_tsv(d, fn):
    lines = (d / "events.tsv").read_text().splitlines()
    (d / "events.tsv").write_text("\n".join(fn(lines)) + "\n")


def _map_edit(d, fn):
    import yaml

    p = d / "mapping.yaml"
    m = yaml.safe_load(p.read_text())
    fn(m)
    p.write_text(yaml.safe_dump(m))


def _arr_npz(d, **changes):
    npz_edit(d / "data.npz", **changes)


# (case id, dataset folder, how to break it, command ("inspect"/"import"), file the message must name)
CASES = [
    # NSD, MindEyeV2 layout
    ("nsd-truncated-betas", "nsd", lambda d: truncate(d / NSD_BETAS, 0.6), "inspect", NSD_BETAS),
    ("nsd-betas-not-hdf5", "nsd", lambda d: (d / NSD_BETAS).write_text("not hdf5"), "inspect", NSD_BETAS),
    ("nsd-betas-missing-key", "nsd", lambda d: (h5_replace(d / NSD_BETAS, "data", np.zeros((2, 2))),
                                                h5py.File(d / NSD_BETAS, "a").__delitem__("betas")), "inspect", NSD_BETAS),
    ("nsd-betas-1d", "nsd", lambda d: h5_replace(d / NSD_BETAS, "betas", np.zeros(36, np.float32)), "inspect", NSD_BETAS),
    ("nsd-betas-nan-row", "nsd", _nsd_nan, "import", NSD_BETAS),
    ("nsd-behav-missing-global-trial", "nsd", lambda d: edit_behav(d / NSD_TRAIN0, 0, 5, -1), "inspect", NSD_TRAIN0),
    ("nsd-behav-trial-past-rows", "nsd", lambda d: edit_behav(d / NSD_TRAIN0, 0, 5, 10_000), "inspect", NSD_TRAIN0),
    ("nsd-duplicate-trial", "nsd", _nsd_dup, "inspect", "train/1.tar"),
    ("nsd-image-index-missing", "nsd", lambda d: edit_behav(d / NSD_TRAIN0, 0, 0, 99_999), "inspect",
     "coco_images_224_float16.hdf5"),
    ("nsd-mask-wrong-length", "nsd", lambda d: _nsd_mask(d, "V1", np.ones(7, bool)), "inspect", "brain_region_masks.hdf5"),
    ("nsd-mask-empty", "nsd", lambda d: _nsd_mask(d, "V2", np.zeros(40, bool)), "inspect", "brain_region_masks.hdf5"),
    ("nsd-images-missing", "nsd", lambda d: (d / "coco_images_224_float16.hdf5").unlink(), "inspect",
     "coco_images_224_float16.hdf5"),
    ("nsd-images-not-images", "nsd", lambda d: h5_replace(d / "coco_images_224_float16.hdf5", "images",
                                                          np.zeros((60, 8), np.float16)), "inspect",
     "coco_images_224_float16.hdf5"),
    ("nsd-truncated-tar", "nsd", lambda d: truncate(d / NSD_TEST, 0.3), "inspect", NSD_TEST),
    ("nsd-no-train-folder", "nsd", lambda d: shutil.rmtree(d / "wds/subj01/train"), "inspect", "train"),
    ("nsd-behav-wrong-shape", "nsd", _nsd_behav_shape, "inspect", NSD_TRAIN0),
    ("nsd-test-image-in-train", "nsd", _nsd_leak, "inspect", "train/2.tar"),
    # GOD, MinD-Vis npz
    ("god-missing-arr3", "god", lambda d: npz_edit(d / "sbj_3.npz", arr_3=None), "inspect", "sbj_3.npz"),
    ("god-arr0-1d", "god", lambda d: npz_edit(d / "sbj_3.npz", arr_0=np.zeros(30)), "inspect", "sbj_3.npz"),
    ("god-labels-length", "god", lambda d: npz_edit(d / "sbj_3.npz", arr_3=np.arange(5)), "inspect", "sbj_3.npz"),
    ("god-label-past-images", "god", lambda d: npz_edit(d / "sbj_3.npz", arr_3=np.arange(20) + 10), "inspect", "sbj_3.npz"),
    ("god-test-voxels", "god", lambda d: npz_edit(d / "sbj_3.npz", arr_1=np.zeros((20, 29))), "inspect", "sbj_3.npz"),
    ("god-nan-row", "god", lambda d: npz_edit(d / "sbj_3.npz", arr_0=np.where(np.arange(30) == 4, np.inf, np.ones((20, 30)))),
     "inspect", "sbj_3.npz"),
    ("god-roi-length", "god", lambda d: npz_edit(d / "sbj_3.npz", V1=np.ones(12, bool)), "inspect", "sbj_3.npz"),
    ("god-roi-empty", "god", lambda d: npz_edit(d / "sbj_3.npz", FFA=np.zeros(30, bool)), "inspect", "sbj_3.npz"),
    ("god-images-missing", "god", lambda d: (d / "images_256.npz").unlink(), "inspect", "images_256.npz"),
    ("god-images-not-images", "god", lambda d: npz_edit(d / "images_256.npz", test_images=np.zeros((5, 4))), "inspect",
     "images_256.npz"),
    ("god-truncated-npz", "god", lambda d: truncate(d / "sbj_3.npz", 0.5), "inspect", "sbj_3.npz"),
    ("god-pickled-object-array", "god", _god_obj, "inspect", "sbj_3.npz"),
    # BOLD5000
    ("b5-trial-count", "b5", lambda d: (d / B5_RUN).write_text((d / B5_RUN).read_text() + "extra.jpg\n"), "inspect",
     "Stimuli_Presentation_Lists/CSI1"),
    ("b5-image-missing", "b5", _b5_missing_image, "inspect", "img_dict.npy"),
    ("b5-img-dict-foreign-object", "b5", lambda d: (d / B5_DICT).write_bytes(_npy_object_bytes(Path("/etc/passwd"))),
     "inspect", "img_dict.npy"),
    ("b5-roi-file-rows", "b5", lambda d: np.save(d / B5_LH, np.zeros((3, 4), np.float32)), "inspect",
     "LHLOC.npy"),
    ("b5-no-test-images", "b5", lambda d: (d / B5_REP).write_text("nothing.jpg\n"), "inspect", "repeated_stimuli_113_list.txt"),
    ("b5-nan-betas", "b5", lambda d: np.save(d / B5_LH, np.full((16, 4), np.nan, np.float32)), "inspect", "LHEarlyVis.npy"),
    ("b5-truncated-npy", "b5", lambda d: truncate(d / B5_LH, 0.7), "inspect", "LHEarlyVis.npy"),
    # NIfTI
    ("nii-truncated-betas", "nii", lambda d: (d / "betas.nii.gz").write_bytes(
        gzip.compress(gzip.decompress((d / "betas.nii.gz").read_bytes())[:2000])), "inspect", "betas.nii.gz"),
    ("nii-not-nifti", "nii", lambda d: (d / "betas.nii.gz").write_bytes(b"garbage" * 50), "inspect", "betas.nii.gz"),
    ("nii-mask-shape", "nii", lambda d: _nii_save(d, "mask.nii.gz", np.ones((9, 12, 10), np.uint8)), "inspect", "mask.nii.gz"),
    ("nii-mask-affine", "nii", lambda d: _nii_save(d, "mask.nii.gz", np.ones((10, 12, 10), np.uint8), np.diag([2.0, 2, 2, 1])),
     "inspect", "mask.nii.gz"),
    ("nii-mask-empty", "nii", lambda d: _nii_save(d, "mask.nii.gz", np.zeros((10, 12, 10), np.uint8)), "inspect", "mask.nii.gz"),
    ("nii-no-stim-column", "nii", lambda d: _nii_tsv(d, lambda ls: [ls[0].replace("stim_file", "stimulus")] + ls[1:]),
     "inspect", "events.tsv"),
    ("nii-row-count", "nii", lambda d: _nii_tsv(d, lambda ls: ls[:-1]), "inspect", "events.tsv"),
    ("nii-stim-missing", "nii", lambda d: (d / "stimuli/img000.png").unlink(), "inspect", "events.tsv"),
    ("nii-stim-not-image", "nii", lambda d: (d / "stimuli/img001.png").write_text("hello"), "inspect", "img001.png"),
    ("nii-empty-roi", "nii", lambda d: (d / "labels.tsv").write_text("index\tname\n1\tV1\n2\tV2\n3\tV3\n"), "inspect",
     "labels.nii.gz"),
    ("nii-bad-split", "nii", lambda d: _nii_tsv(d, lambda ls: [ls[0], ls[1].replace("train", "training")] + ls[2:]),
     "inspect", "events.tsv"),
    ("nii-nan-betas", "nii", lambda d: _nii_save(d, "betas.nii.gz", np.full((10, 12, 10, 12), np.nan, np.float32)),
     "inspect", "betas.nii.gz"),
    # plain arrays + mapping
    ("arr-mapping-no-betas", "arr_npz", lambda d: _map_edit(d, lambda m: m.pop("betas")), "inspect", "mapping.yaml"),
    ("arr-mapping-unknown-key", "arr_npz", lambda d: _map_edit(d, lambda m: m.update(bettas={})), "inspect", "mapping.yaml"),
    ("arr-mapping-bad-yaml", "arr_npz", lambda d: (d / "mapping.yaml").write_text("betas: [unclosed"), "inspect",
     "mapping.yaml"),
    ("arr-mapping-bad-layout", "arr_npz", lambda d: _map_edit(d, lambda m: m["images"].update(layout="XYZ")), "inspect",
     "mapping.yaml"),
    ("arr-missing-array", "arr_npz", lambda d: _arr_npz(d, fmri_test=None), "inspect", "data.npz"),
    ("arr-test-index-range", "arr_npz", lambda d: _arr_npz(d, lab_test=np.arange(8) + 3), "inspect", "data.npz"),
    ("arr-image-range", "arr_npz", lambda d: _arr_npz(d, stim_train=np.full((16, 8, 8, 3), 1000.0)), "inspect", "data.npz"),
    ("arr-roi-length", "arr_npz", lambda d: _arr_npz(d, roi_v1=np.ones(3, bool)), "inspect", "data.npz"),
    ("arr-string-betas", "arr_npz", lambda d: _arr_npz(d, fmri_train=np.array([["a"] * 12] * 16)), "inspect", "data.npz"),
    ("arr-not-a-zip", "arr_npz", lambda d: (d / "data.npz").write_text("plain text"), "inspect", "data.npz"),
    ("arr-mat5-truncated", "arr_mat5", lambda d: truncate(d / "data.mat", 0.5), "inspect", "data.mat"),
    ("arr-mat73-truncated", "arr_mat73", lambda d: truncate(d / "data.mat", 0.5), "inspect", "data.mat"),
    ("arr-h5-truncated", "arr_h5", lambda d: truncate(d / "data.h5", 0.4), "inspect", "data.h5"),
    ("arr-h5-nan", "arr_h5", lambda d: h5_replace(d / "data.h5", "fmri/fmri_test", np.full((8, 12), np.nan)), "inspect",
     "data.h5"),
]


PROGRESS = ("[", "started ", "info: ")  # import's progress display (stderr), not error output


def _argv(cmd: str, d: Path, fmt: str, out: Path) -> list[str]:
    if fmt == "nsd" or fmt == "b5" or fmt == "nii":
        src = d
    elif fmt == "god":
        src = d / "sbj_3.npz"
    else:
        src = d / "mapping.yaml"  # the mapping names its data file
    argv = [cmd, str(src)]
    if cmd == "import":
        argv += ["--out", str(out)]
    return argv


def _fix_arrays_mapping(d: Path, fmt: str) -> None:
    """Point the fixture mapping at its data file, so the mapping alone is the source."""
    if fmt.startswith("arr_") and (d / "mapping.yaml").exists():
        import yaml

        m = yaml.safe_load((d / "mapping.yaml").read_text())
        if isinstance(m, dict):
            m["file"] = next(p.name for p in d.iterdir() if p.stem == "data")
            (d / "mapping.yaml").write_text(yaml.safe_dump(m))


def test_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_gives_one_clear_line(case, base, tmp_path, capsys):
    name, fmt, breaker, cmd, must_name = case
    d = tmp_path / fmt
    shutil.copytree(base / fmt, d)
    _fix_arrays_mapping(d, fmt)
    breaker(d)
    out = tmp_path / "out.nlsubj"
    rc = main(_argv(cmd, d, fmt, out))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(PROGRESS)]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("neurolens: error: "), err
    assert must_name in lines[0], lines[0]
    assert not out.exists()


def test_valid_fixtures_pass_the_same_path(base, tmp_path, capsys):
    """The unbroken copies open, so every failure above comes from the one thing broken."""
    for fmt in ("nsd", "god", "b5", "nii", "arr_npz", "arr_mat5", "arr_mat73", "arr_h5"):
        d = tmp_path / fmt
        shutil.copytree(base / fmt, d)
        _fix_arrays_mapping(d, fmt)
        assert main(_argv("inspect", d, fmt, tmp_path / "o")) == 0, capsys.readouterr().err


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("nsd-truncated-betas", "god-pickled-object-array",
                                                                 "nii-truncated-betas")], ids=lambda c: c[0])
def test_malformed_input_via_subprocess(case, base, tmp_path):
    name, fmt, breaker, cmd, must_name = case
    d = tmp_path / fmt
    shutil.copytree(base / fmt, d)
    breaker(d)
    out = tmp_path / "out.nlsubj"
    r = subprocess.run([sys.executable, "-m", "engine.cli.main", "import", *_argv(cmd, d, fmt, out)[1:], "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(PROGRESS)]
    assert len(lines) == 1 and must_name in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_unrecognised_file_and_unknown_format(tmp_path, capsys):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    assert main(["inspect", str(p)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert main(["inspect", str(p), "--format", "fmri-magic"]) == 2
    assert "fmri-magic" in capsys.readouterr().err
