"""Builders that write tiny datasets in each real layout (see /work/shared/reference/data-formats.md).

Each builder writes the files exactly as the upstream release names and shapes them, only with small sizes, and
returns the path a user would pass to ``neurolens inspect``/``import`` plus the facts tests check against.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

NSD_ROIS = ("nsd_general", "V1", "V2", "V3", "V4", "higher_vis")


# --- NSD (MindEyeV2) -----------------------------------------------------------------------------------------------
def _npy_bytes(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def write_wds_tar(path: Path, behav_rows: list[np.ndarray]) -> None:
    """One webdataset tar: per sample behav (1, 17), past/future_behav (15, 17), olds_behav (3, 17); -1 = missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for k, row in enumerate(behav_rows):
            key = f"sample{k:09d}"
            members = {
                "behav.npy": row.reshape(1, 17).astype(np.float64),
                "past_behav.npy": np.full((15, 17), -1.0),
                "future_behav.npy": np.full((15, 17), -1.0),
                "olds_behav.npy": np.full((3, 17), -1.0),
            }
            for ext, arr in members.items():
                data = _npy_bytes(arr)
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def write_nsd(root: Path, *, subject: int = 1, n_sessions: int = 3, trials_per_session: int = 12, n_voxels: int = 40,
              n_images: int = 60, n_shared: int = 6, size: int = 8, masks: bool = True, seed: int = 0) -> dict:
    """MindEyeV2 layout. Shared images are shown 3 times each (spread over sessions); the rest once or twice.

    Returns facts: n_trials, n_test_trials, n_test_images, n_train_trials, n_used_images, kid_rows (per trial).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tag = f"subj{subject:02d}"
    n_trials = n_sessions * trials_per_session
    shared = np.zeros(n_images, bool)
    shared[rng.choice(n_images, n_shared, replace=False)] = True
    shared_rows = np.flatnonzero(shared)
    others = np.flatnonzero(~shared)
    n_shared_trials = 3 * n_shared
    pool = list(np.repeat(shared_rows, 3))
    n_other = n_trials - n_shared_trials
    other_pick = list(rng.choice(others, n_other, replace=True))
    kid = np.array(pool + other_pick)
    rng.shuffle(kid)
    betas = rng.standard_normal((n_trials, n_voxels)).astype(np.float32)
    import h5py

    with h5py.File(root / f"betas_all_{tag}_fp32_renorm.hdf5", "w") as f:
        f.create_dataset("betas", data=betas)
    imgs = rng.random((n_images, 3, size, size)).astype(np.float16)
    with h5py.File(root / "coco_images_224_float16.hdf5", "w") as f:
        f.create_dataset("images", data=imgs)
    np.save(root / "shared1000.npy", shared)
    if masks:
        with h5py.File(root / "brain_region_masks.hdf5", "w") as f:
            g = f.create_group(tag)
            g.create_dataset("nsd_general", data=np.ones(n_voxels, bool))
            for i, n in enumerate(NSD_ROIS[1:]):
                m = np.zeros(n_voxels, bool)
                m[i * n_voxels // 5 : (i + 1) * n_voxels // 5] = True
                g.create_dataset(n, data=m)
    rows = []
    for g_trial in range(n_trials):
        ses, t = divmod(g_trial, trials_per_session)
        run = 1 + t // max(1, trials_per_session // 2)
        r = np.full(17, -1.0)
        r[[0, 1, 2, 3, 4, 5, 16]] = [kid[g_trial], subject, ses + 1, run, t + 1, g_trial, float(shared[kid[g_trial]])]
        r[6] = g_trial * 4.0
        rows.append(r)
    rows = np.array(rows)
    wds = root / "wds" / tag
    for ses in range(n_sessions):
        sel = [r for r in rows if r[2] == ses + 1 and r[16] == 0]
        write_wds_tar(wds / "train" / f"{ses}.tar", sel)
    test_rows = [r for r in rows if r[16] == 1]
    write_wds_tar(wds / "new_test" / "0.tar", test_rows)
    old = [r for r in test_rows if r[2] < n_sessions]  # the older set predates the last session
    write_wds_tar(wds / "test" / "0.tar", old)
    return {"path": root, "n_trials": n_trials, "n_test_trials": len(test_rows), "n_old_test_trials": len(old),
            "n_train_trials": n_trials - len(test_rows), "n_test_images": n_shared,
            "n_used_images": len(np.unique(kid)), "kid_rows": kid, "betas": betas, "images": imgs}


# --- GOD (MinD-Vis npz) ----------------------------------------------------------------------------------------------
GOD_ROIS = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "LVC", "HVC", "VC")


def write_god(folder: Path, *, subject: int = 3, n_train_images: int = 20, n_test_images: int = 5, repeats: int = 4,
              n_voxels: int = 30, size: int = 16, seed: int = 0, extra: dict | None = None,
              drop: tuple[str, ...] = ()) -> dict:
    """``sbj_N.npz`` (arr_0…arr_6 + boolean ROI masks) and ``images_256.npz`` (train_images, test_images)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr_3 = rng.permutation(n_train_images)  # one training trial per image, in presentation order
    arr_0 = rng.standard_normal((n_train_images, n_voxels))  # float64, as released
    arr_4 = np.tile(np.arange(n_test_images), repeats)
    arr_1 = rng.standard_normal((n_test_images * repeats, n_voxels))
    arr_2 = np.stack([arr_1[arr_4 == i].mean(0) for i in range(n_test_images)])
    d = {"arr_0": arr_0, "arr_1": arr_1, "arr_2": arr_2, "arr_3": arr_3, "arr_4": arr_4,
         "arr_5": rng.random(n_voxels), "arr_6": rng.random(n_voxels) * 3}
    for i, n in enumerate(GOD_ROIS):
        m = np.zeros(n_voxels, bool)
        if n == "VC":
            m[:] = True
        elif n == "LVC":
            m[: n_voxels // 2] = True
        elif n == "HVC":
            m[n_voxels // 2 :] = True
        else:
            m[(i * 3) % n_voxels : (i * 3) % n_voxels + 3] = True
        d[n] = m
    d.update(extra or {})
    for k in drop:
        d.pop(k, None)
    np.savez(folder / f"sbj_{subject}.npz", **d)
    np.savez(folder / "images_256.npz",
             train_images=rng.integers(0, 256, (n_train_images, size, size, 3), dtype=np.uint8),
             test_images=rng.integers(0, 256, (n_test_images, size, size, 3), dtype=np.uint8))
    return {"path": folder / f"sbj_{subject}.npz", "folder": folder, "n_train": n_train_images,
            "n_test_trials": n_test_images * repeats, "n_test_images": n_test_images, "repeats": repeats,
            "n_voxels": n_voxels, "n_images": n_train_images + n_test_images}


# --- BOLD5000 ------------------------------------------------------------------------------------------------------
B5_ROIS = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")


def write_bold5000(root: Path, *, subject: int = 1, n_sessions: int = 2, runs: int = 2, n_train_images: int = 10,
                   n_test_images: int = 3, test_repeats: int = 2, voxels_per_file: int = 4, size: int = 12,
                   seed: int = 0, image_dict: bool = True) -> dict:
    """GLMsingle ROI betas (LH/RH × 5 ROIs), presentation lists with ``rep_`` repeats, the repeated list, img_dict."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    names_train = [f"COCO_train2014_{i:012d}.jpg" for i in range(n_train_images // 2)]
    names_train += [f"n0144{i:04d}_{i}.JPEG" for i in range(n_train_images - len(names_train))]
    names_test = [f"scene{i}.jpg" for i in range(n_test_images)]
    seq = [(n, False) for n in names_train] + [(n, False) for n in names_test]
    seq += [(n, True) for _ in range(test_repeats - 1) for n in names_test]
    order = rng.permutation(len(seq))
    seq = [seq[i] for i in order]
    # first presentation must not carry rep_: re-mark in chronological order
    seen, lines = set(), []
    for n, _ in seq:
        lines.append(("rep_" + n) if n in seen else n)
        seen.add(n)
    n_trials = len(lines)
    per_run = int(np.ceil(n_trials / (n_sessions * runs)))
    lists = root / "BOLD5000_Stimuli" / "Stimuli_Presentation_Lists" / f"CSI{subject}"
    k = 0
    for s in range(1, n_sessions + 1):
        sd = lists / f"CSI{subject}_sess{s:02d}"
        sd.mkdir(parents=True, exist_ok=True)
        for r in range(1, runs + 1):
            chunk = lines[k : k + per_run]
            k += len(chunk)
            (sd / f"CSI_sess{s:02d}_run{r:02d}.txt").write_text("\n".join(chunk) + ("\n" if chunk else ""))
    scene = root / "BOLD5000_Stimuli" / "Scene_Stimuli"
    (scene / "Presented_Stimuli").mkdir(parents=True, exist_ok=True)
    (scene / "repeated_stimuli_113_list.txt").write_text("\n".join(names_test) + "\n")
    imgs = {n: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for n in names_train + names_test}
    if image_dict:
        np.save(scene / "Presented_Stimuli" / "img_dict.npy", imgs, allow_pickle=True)  # the released (pickled) layout
    else:
        from PIL import Image

        for n, a in imgs.items():
            sub = scene / "Presented_Stimuli" / ("COCO" if n.startswith("COCO") else "Scene")
            sub.mkdir(exist_ok=True)
            Image.fromarray(a).save(sub / n, format="PNG")
    bdir = root / "BOLD5000_GLMsingle_ROI_betas" / "py"
    bdir.mkdir(parents=True, exist_ok=True)
    for hemi in ("LH", "RH"):
        for roi in B5_ROIS:
            np.save(bdir / f"CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{hemi}{roi}.npy",
                    rng.standard_normal((n_trials, voxels_per_file)).astype(np.float32))
    n_test_trials = n_test_images * test_repeats
    return {"path": root, "n_trials": n_trials, "n_test_trials": n_test_trials, "n_train_trials": n_trials - n_test_trials,
            "n_images": n_train_images + n_test_images, "n_test_images": n_test_images, "repeats": test_repeats,
            "n_voxels": 10 * voxels_per_file, "n_sessions": n_sessions}


# --- NIfTI ---------------------------------------------------------------------------------------------------------
def write_nifti(folder: Path, *, n_trials: int = 12, n_images: int = 6, shape=(10, 12, 10), mni: bool = True,
                per_trial_files: bool = False, seed: int = 0) -> dict:
    """4-D betas (or betas/ of 3-D files), brain mask, label image + labels.tsv, BIDS events.tsv, stimuli/ PNGs."""
    import nibabel as nib
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "stimuli").mkdir(parents=True, exist_ok=True)
    aff = np.diag([16.0, 16.0, 16.0, 1.0])
    aff[:3, 3] = [-80, -112, -72]  # a coarse MNI grid covering the brain
    data = rng.standard_normal(shape + (n_trials,)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    labels = np.zeros(shape, np.int16)
    labels[2:5, 2:-2, 2:-2] = 1
    labels[5:8, 2:-2, 2:-2] = 2

    def save(arr, p):
        img = nib.Nifti1Image(arr, aff)
        img.set_sform(aff, code=4 if mni else 1)
        img.set_qform(aff, code=4 if mni else 1)
        nib.save(img, str(p))

    if per_trial_files:
        (folder / "betas").mkdir()
        for t in range(n_trials):
            save(data[..., t], folder / "betas" / f"trial{t:04d}.nii.gz")
    else:
        save(data, folder / "betas.nii.gz")
    save(mask, folder / "mask.nii.gz")
    save(labels, folder / "labels.nii.gz")
    (folder / "labels.tsv").write_text("index\tname\n1\tV1\n2\tV2\n")
    names = [f"img{i:03d}.png" for i in range(n_images)]
    for n in names:
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "stimuli" / n)
    n_test_images = 2
    # test images: the last two, each shown (n_trials - (n_images - 2)) / 2 times
    train_names = names[: n_images - n_test_images]
    test_trials = n_trials - len(train_names)
    stim = train_names + [names[n_images - n_test_images + (i % n_test_images)] for i in range(test_trials)]
    lines = ["onset\tduration\tstim_file\tsplit\tsession\trun"]
    for t, n in enumerate(stim):
        sp = "test" if n in names[-n_test_images:] else "train"
        lines.append(f"{t * 4.0}\t3.0\tstimuli/{n}\t{sp}\t{1 + t * 2 // n_trials}\t1")
    (folder / "events.tsv").write_text("\n".join(lines) + "\n")
    return {"path": folder, "n_trials": n_trials, "n_images": n_images, "n_voxels": int(mask.sum()),
            "n_test_trials": test_trials, "n_test_images": n_test_images, "affine": aff, "shape": shape,
            "roi_sizes": {"V1": int(((labels == 1) & (mask > 0)).sum()), "V2": int(((labels == 2) & (mask > 0)).sum())}}


# --- plain arrays --------------------------------------------------------------------------------------------------
def array_content(*, n_train: int = 16, n_test_images: int = 4, repeats: int = 2, n_voxels: int = 12, size: int = 8,
                  seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "fmri_train": rng.standard_normal((n_train, n_voxels)),
        "fmri_test": rng.standard_normal((n_test_images * repeats, n_voxels)),
        "stim_train": rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
        "stim_test": rng.integers(0, 256, (n_test_images, size, size, 3), dtype=np.uint8),
        "lab_test": np.tile(np.arange(n_test_images), repeats),
        "roi_v1": (np.arange(n_voxels) < n_voxels // 2),
        "nc": rng.random(n_voxels),
    }


ARRAYS_MAPPING = {
    "version": 1,
    "betas": {"train": "fmri_train", "test": "fmri_test"},
    "images": {"train": "stim_train", "test": "stim_test", "layout": "NHWC", "range": "0-255"},
    "trials": {"test_image_index": "lab_test", "index_base": 0},
    "rois": {"V1": "roi_v1"},
    "noise_ceiling": "nc",
}


def write_arrays(folder: Path, kind: str = "npz", *, content: dict | None = None, mapping: dict | None = None,
                 mapping_format: str = "yaml") -> dict:
    """Write ``content`` as .npz, .mat v5, .mat v7.3 (HDF5, column-major, 512-byte MATLAB header) or .h5, plus a
    mapping file. MATLAB files store 1-based test labels and images as H×W×3×N, as MATLAB users do."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = dict(content or array_content())
    m = json.loads(json.dumps(mapping or ARRAYS_MAPPING))
    if kind in ("mat5", "mat73"):
        c["lab_test"] = c["lab_test"] + 1
        m["trials"]["index_base"] = 1
        for k in ("stim_train", "stim_test"):
            c[k] = np.transpose(c[k], (1, 2, 3, 0))  # H × W × 3 × N
        m["images"]["layout"] = "HWCN"
    if kind == "npz":
        p = folder / "data.npz"
        np.savez(p, **c)
    elif kind == "mat5":
        import scipy.io

        p = folder / "data.mat"
        scipy.io.savemat(p, {k: (v.astype(np.uint8) if v.dtype == bool else v) for k, v in c.items()})
    elif kind == "mat73":
        import h5py

        p = folder / "data.mat"
        with h5py.File(p, "w", userblock_size=512) as f:
            for k, v in c.items():
                v = v.astype(np.uint8) if v.dtype == bool else v
                f.create_dataset(k, data=np.ascontiguousarray(v.T))  # column-major: h5py sees reversed axes
        with open(p, "r+b") as fh:
            fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    elif kind == "h5":
        import h5py

        p = folder / "data.h5"
        with h5py.File(p, "w") as f:
            g = f.create_group("fmri")
            for k, v in c.items():
                (g if k.startswith("fmri") else f).create_dataset(k, data=v)
        m["betas"] = {"train": "fmri/fmri_train", "test": "fmri/fmri_test"}
    else:
        raise ValueError(kind)
    mp = folder / ("mapping.json" if mapping_format == "json" else "mapping.yaml")
    mp.write_text(json.dumps(m) if mapping_format == "json" else yaml.safe_dump(m))
    return {"path": p, "mapping": mp, "content": c}
