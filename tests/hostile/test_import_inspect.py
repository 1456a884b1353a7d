"""Hostile input to ``import`` and ``inspect``: plain arrays, mapping files, native subjects, NIfTI/BIDS, paths.

Every case: exit status 2, one line naming the file (and the key where there is one), no file changed or left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zlib

import numpy as np
import pytest

from tests.engine.data import fixtures as F
from tests.hostile.conftest import copy_of, one_line_error, refused, run_cli, tree_hash

COMMANDS = ("import", "inspect")


def _argv(command, src, tmp_path, *extra):
    if command == "import":
        return ("import", src, "--out", tmp_path / "out.nlsubj", "--json-events", *extra)
    return ("inspect", src, *extra)


# --- plain arrays: out-of-contract content ---------------------------------------------------------------------------
def _set(key, value_fn):
    def mod(c):
        c[key] = value_fn(c[key])
    return mod


def _nan(a):
    a = a.copy()
    a[3, 2] = np.nan
    return a


def _inf(a):
    a = a.copy()
    a[1, 1] = np.inf
    return a


CONTENT_CASES = {
    "betas-1d": ("fmri_train", _set("fmri_train", lambda a: a[:, 0])),
    "betas-3d": ("fmri_train", _set("fmri_train", lambda a: a[..., None])),
    "betas-complex": ("fmri_train", _set("fmri_train", lambda a: a + 1j * a)),
    "betas-nan": ("fmri_train", _set("fmri_train", _nan)),
    "betas-inf": ("fmri_train", _set("fmri_train", _inf)),
    "betas-beyond-float32": ("fmri_train", _set("fmri_train", lambda a: a * 1e300)),
    "betas-strings": ("fmri_train", _set("fmri_train", lambda a: a.astype(str))),
    "betas-bool": ("fmri_train", _set("fmri_train", lambda a: a > 0)),
    "betas-empty": ("fmri_train", _set("fmri_train", lambda a: a[:0])),
    "betas-test-voxels": ("fmri_test", _set("fmri_test", lambda a: a[:, :5])),
    "test-nan": ("fmri_test", _set("fmri_test", _nan)),
    "images-complex": ("stim_train", _set("stim_train", lambda a: a.astype(np.complex64))),
    "images-float-0-2": ("stim_train", _set("stim_train", lambda a: a.astype(np.float32) / 127.5)),
    "images-float-nan": ("stim_train", _set("stim_train", lambda a: np.where(a > 250, np.nan, a / 255.0))),
    "images-5d": ("stim_train", _set("stim_train", lambda a: a[None])),
    "images-2-channels": ("stim_train", _set("stim_train", lambda a: a[..., :2])),
    "images-strings": ("stim_train", _set("stim_train", lambda a: a.astype(str))),
    "images-1-pixel": ("stim_train", _set("stim_train", lambda a: a[:, :1, :1])),
    "index-out-of-range": ("lab_test", _set("lab_test", lambda a: a + 99)),
    "index-negative": ("lab_test", _set("lab_test", lambda a: a - 5)),
    "index-fractional": ("lab_test", _set("lab_test", lambda a: a + 0.5)),
    "index-2d": ("lab_test", _set("lab_test", lambda a: np.stack([a, a, a]))),
    "index-length": ("lab_test", _set("lab_test", lambda a: a[:-1])),
    "index-complex": ("lab_test", _set("lab_test", lambda a: a + 0j)),
    "roi-length": ("roi_v1", _set("roi_v1", lambda a: a[:-2])),
    "roi-empty": ("roi_v1", _set("roi_v1", lambda a: np.zeros_like(a))),
    "roi-not-binary": ("roi_v1", _set("roi_v1", lambda a: a.astype(int) * 2)),
    "noise-ceiling-above-1": ("nc", _set("nc", lambda a: a + 5)),
    "noise-ceiling-strings": ("nc", _set("nc", lambda a: a.astype(str))),
    "noise-ceiling-length": ("nc", _set("nc", lambda a: a[:3])),
    "noise-ceiling-complex": ("nc", _set("nc", lambda a: a + 1j)),
    "missing-array": ("fmri_test", lambda c: c.pop("fmri_test")),
}


def _mapping_for(case):
    m = json.loads(json.dumps(F.ARRAYS_MAPPING))
    if case == "images-float-0-2" or case == "images-float-nan":
        m["images"]["range"] = "auto"
    return m


def _key(kind, key):
    return f"fmri/{key}" if kind == "h5" and key.startswith("fmri") else key


def _array_case_params():
    out = [(c, "npz", cmd) for c in CONTENT_CASES for cmd in COMMANDS]
    for kind in ("h5", "mat5"):
        for c in ("betas-nan", "betas-complex", "images-complex", "index-out-of-range", "roi-empty"):
            out += [(c, kind, cmd) for cmd in COMMANDS]
    return out


@pytest.mark.parametrize("case,kind,command", _array_case_params())
def test_out_of_contract_arrays_are_refused(case, kind, command, tmp_path):
    key, mod = CONTENT_CASES[case]
    content = F.array_content()
    mod(content)
    info = F.write_arrays(tmp_path / "src", kind, content=content, mapping=_mapping_for(case))
    line = refused(tmp_path, *_argv(command, info["path"], tmp_path, "--mapping", info["mapping"]),
                   names=[info["path"].name])
    assert _key(kind, key) in line, line


def test_pickled_object_array_is_never_loaded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    c = F.array_content()
    c["fmri_train"] = np.array([{"x": 1}, None], dtype=object)
    np.savez(src / "data.npz", **c)
    (src / "mapping.yaml").write_text(json.dumps({**F.ARRAYS_MAPPING, "file": "data.npz"}))
    for command in COMMANDS:
        refused(tmp_path, *_argv(command, src / "mapping.yaml", tmp_path), names=["data.npz", "pickle"])


# --- mapping files ---------------------------------------------------------------------------------------------------
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)) + "categories: *i\n"

MAPPING_TEXTS = {
    "unknown-key": ("yaml", None, lambda m: m.update(colour="red"), "colour"),
    "betas-list": ("yaml", None, lambda m: m.update(betas=["fmri_train"]), "betas"),
    "version-2": ("yaml", None, lambda m: m.update(version=2), "version"),
    "layout": ("yaml", None, lambda m: m["images"].update(layout="XYZW"), "images.layout"),
    "range": ("yaml", None, lambda m: m["images"].update(range="0-9"), "images.range"),
    "index-base": ("yaml", None, lambda m: m["trials"].update(index_base=2), "trials.index_base"),
    "all-and-train": ("yaml", None, lambda m: m["betas"].update(all="fmri_train"), "betas"),
    "no-betas": ("yaml", None, lambda m: m.pop("betas"), "betas.train"),
    "images-file-missing": ("yaml", None, lambda m: m["images"].update(file="nope.npz"), "nope.npz"),
    "data-file-missing": ("yaml", None, lambda m: m.update(file="gone.npz"), "gone.npz"),
    "data-file-is-folder": ("yaml", None, lambda m: m.update(file="."), "src"),
    "categories-dict": ("yaml", None, lambda m: m.update(categories={"a": 1}), "categories"),
    "rois-list": ("yaml", None, lambda m: m.update(rois=["roi_v1"]), "rois"),
    "name-int": ("yaml", None, lambda m: m.update(name=12), "name"),
    "memory-order": ("yaml", None, lambda m: m.update(memory_order="X"), "memory_order"),
    "array-name-int": ("yaml", None, lambda m: m["betas"].update(train=5), "betas.train"),
    "array-name-empty": ("yaml", None, lambda m: m["betas"].update(train=" "), "betas.train"),
    "alias-bomb": ("yaml", BOMB, None, "aliases"),
    "recursive-alias": ("yaml", "betas: &b {train: fmri_train, test: *b}\n", None, "mapping.yaml"),
    "deep-flow-yaml": ("yaml", "[" * 200_000 + "]" * 200_000, None, "mapping.yaml"),
    "deep-block-yaml": ("yaml", "- " * 100_000 + "x\n", None, "mapping.yaml"),
    "python-tag": ("yaml", "betas: !!python/object/apply:os.system ['echo hacked']\n", None, "mapping.yaml"),
    "tabs": ("yaml", "betas:\n\ttrain: x\n", None, "mapping.yaml"),
    "empty": ("yaml", "", None, "mapping.yaml"),
    "top-level-list": ("yaml", "- 1\n- 2\n", None, "top level"),
    "invalid-utf8": ("yaml", b"betas: \xff\xfe\xfa\n", None, "mapping.yaml"),
    "deep-json": ("json", "[" * 200_000 + "]" * 200_000, None, "mapping.json"),
    "json-syntax": ("json", '{"version": 1,', None, "mapping.json"),
    "json-list": ("json", "[1, 2, 3]", None, "top level"),
    "json-huge-number": ("json", '{"version": 1e999999}', None, "version"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", MAPPING_TEXTS)
def test_malformed_mapping_files_are_refused_quickly(case, command, tmp_path):
    fmt, text, mod, name = MAPPING_TEXTS[case]
    info = F.write_arrays(tmp_path / "src", "npz", mapping_format=fmt)
    mp = info["mapping"]
    if text is None:
        m = json.loads(json.dumps({**F.ARRAYS_MAPPING, "file": "data.npz"}))
        mod(m)
        text = json.dumps(m)
    mp.write_bytes(text if isinstance(text, bytes) else text.encode())
    t0 = time.perf_counter()
    names = [name] if case.endswith("missing") or case.endswith("folder") else [mp.name, name]
    line = refused(tmp_path, *_argv(command, mp, tmp_path), names=names)
    assert time.perf_counter() - t0 < 10 and len(line) < 400, line  # no alias expansion, no huge repr


def test_mapping_with_bom_and_crlf_is_accepted(tmp_path):
    info = F.write_arrays(tmp_path / "src", "npz")
    text = json.dumps({**F.ARRAYS_MAPPING, "file": "data.npz"}, indent=1).replace("\n", "\r\n")
    info["mapping"].write_bytes(b"\xef\xbb\xbf" + text.encode())
    res = run_cli("import", info["mapping"], "--out", tmp_path / "ok.nlsubj", "--json-events")
    assert res.rc == 0, str(res)
    assert run_cli("inspect", tmp_path / "ok.nlsubj").rc == 0


# --- corrupt and oversized containers --------------------------------------------------------------------------------
def _truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _garbage(p):
    p.write_bytes(os.urandom(4096))


def _huge_h5(p):
    import h5py

    with h5py.File(p, "a") as f:
        del f["fmri/fmri_train"]
        f.create_dataset("fmri/fmri_train", shape=(10_000_000, 1_000_000), dtype="f8", chunks=(1, 1000))


def _huge_npz_member(p):
    import zipfile

    header = {"descr": "<f8", "fortran_order": False, "shape": (10_000_000, 1_000_000)}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(p, "a") as z:
        z.writestr("huge.npy", buf.getvalue() + b"\0" * 64)


def _huge_mat5(p):
    data = p.read_bytes()
    dims = struct.pack("<ii", 7, 11)
    assert dims in data
    p.write_bytes(data.replace(dims, struct.pack("<ii", 2_000_000, 2_000_000), 1))


CONTAINER_CASES = {
    "npz-truncated": ("npz", _truncate, None),
    "npz-garbage": ("npz", _garbage, None),
    "h5-truncated": ("h5", _truncate, None),
    "h5-garbage": ("h5", _garbage, None),
    "mat-garbage": ("mat5", _garbage, None),
    "mat73-truncated": ("mat73", _truncate, None),
    "h5-declares-80-terabytes": ("h5", _huge_h5, "fmri/fmri_train"),
    "npz-declares-80-terabytes": ("npz", _huge_npz_member, "huge"),
    "mat5-declares-32-terabytes": ("mat5", _huge_mat5, "big"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CONTAINER_CASES)
def test_corrupt_or_oversized_containers_are_refused(case, command, tmp_path):
    kind, damage, key = CONTAINER_CASES[case]
    content = F.array_content()
    mapping = json.loads(json.dumps(F.ARRAYS_MAPPING))
    if case == "mat5-declares-32-terabytes":
        content["big"] = np.zeros((7, 11))
        mapping["noise_ceiling"] = "big"
    if case == "npz-declares-80-terabytes":
        mapping["noise_ceiling"] = "huge"
    info = F.write_arrays(tmp_path / "src", kind, content=content, mapping=mapping)
    damage(info["path"])
    line = refused(tmp_path, *_argv(command, info["path"], tmp_path, "--mapping", info["mapping"]),
                   names=[info["path"].name])
    if key:
        assert key in line and "too large" in line, line


# --- native subjects -------------------------------------------------------------------------------------------------
def _json_edit(name, fn):
    def edit(folder):
        p = folder / name
        d = json.loads(p.read_text())
        fn(d)
        p.write_text(json.dumps(d))
    return edit


def _npz_edit(name, key, fn):
    def edit(folder):
        p = folder / name
        with np.load(p) as z:
            d = {k: z[k] for k in z.files}
        d[key] = fn(d[key])
        np.savez(p, **d)
    return edit


def _write(name, data):
    def edit(folder):
        (folder / name).write_bytes(data)
    return edit


def _betas(fn):
    def edit(folder):
        a = np.load(folder / "betas.npy")
        np.save(folder / "betas.npy", fn(a))
    return edit


NATIVE_CASES = {
    "subject-json-list": ("subject.json", None, _write("subject.json", b"[1, 2]")),
    "rois-string": ("subject.json", "rois", _json_edit("subject.json", lambda d: d.update(rois="V1"))),
    "rois-ints": ("subject.json", "rois", _json_edit("subject.json", lambda d: d.update(rois=[1, 2]))),
    "n-trials-string": ("subject.json", "n_trials", _json_edit("subject.json", lambda d: d.update(n_trials="45"))),
    "n-trials-wrong": ("subject.json", "n_trials", _json_edit("subject.json", lambda d: d.update(n_trials=7))),
    "schema-string": ("subject.json", "schema_version",
                      _json_edit("subject.json", lambda d: d.update(schema_version="1"))),
    "schema-newer": ("subject.json", "schema_version", _json_edit("subject.json", lambda d: d.update(schema_version=9))),
    "format-tag": ("subject.json", "format", _json_edit("subject.json", lambda d: d.update(format="other"))),
    "provenance-list": ("subject.json", "provenance", _json_edit("subject.json", lambda d: d.update(provenance=[]))),
    "volume-list": ("subject.json", "volume", _json_edit("subject.json", lambda d: d.update(volume=[1]))),
    "name-int": ("subject.json", "name", _json_edit("subject.json", lambda d: d.update(name=5))),
    "subject-json-deep": ("subject.json", None, _write("subject.json", b"[" * 100_000 + b"]" * 100_000)),
    "subject-json-binary": ("subject.json", None, _write("subject.json", b"\xff\xfe\x00garbage")),
    "labels-strings": ("stimuli.json", "labels", _json_edit("stimuli.json", lambda d: d.update(labels=["a"] * 54))),
    "labels-nested": ("stimuli.json", "labels", _json_edit("stimuli.json", lambda d: d.update(labels=[[1]] * 54))),
    "captions-int": ("stimuli.json", "captions", _json_edit("stimuli.json", lambda d: d.update(captions=3))),
    "categories-dict": ("stimuli.json", "categories", _json_edit("stimuli.json", lambda d: d.update(categories={}))),
    "noise-ceiling-strings": ("voxels.npz", "noise_ceiling",
                              _npz_edit("voxels.npz", "noise_ceiling", lambda a: a.astype(str))),
    "hemi-float": ("voxels.npz", "hemi", _npz_edit("voxels.npz", "hemi", lambda a: a + 0.5)),
    "split-float": ("trials.npz", "split", _npz_edit("trials.npz", "split", lambda a: a + 0.5)),
    "image-index-out-of-range": ("trials.npz", "image_index",
                                 _npz_edit("trials.npz", "image_index", lambda a: a + 1000)),
    "roi-mask-strings": ("rois.npz", "V1", _npz_edit("rois.npz", "V1", lambda a: a.astype(str))),
    "betas-truncated": ("betas.npy", None, lambda f: _truncate(f / "betas.npy")),
    "betas-pickled": ("betas.npy", None, lambda f: np.save(f / "betas.npy", np.array([None, {}], object),
                                                            allow_pickle=True)),
    "betas-int64": ("betas.npy", None, _betas(lambda a: a.astype(np.int64))),
    "betas-complex": ("betas.npy", None, _betas(lambda a: a.astype(np.complex64))),
    "images-float": ("images.npy", None, lambda f: np.save(f / "images.npy", np.load(f / "images.npy") / 255.0)),
    "stimuli-missing": ("stimuli.json", None, lambda f: (f / "stimuli.json").unlink()),
    "ground-truth-garbage": ("ground_truth.npz", None, _write("ground_truth.npz", b"PK\x03\x04garbage")),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", NATIVE_CASES)
def test_tampered_native_subjects_are_refused(case, command, base, tmp_path):
    name, key, edit = NATIVE_CASES[case]
    subj = copy_of(base["subject"], tmp_path / "s.nlsubj")
    edit(subj)
    line = refused(tmp_path, *_argv(command, subj, tmp_path), names=[name])
    if key:
        assert key in line, line


def test_nan_in_native_betas_is_refused_on_import(base, tmp_path):
    subj = copy_of(base["subject"], tmp_path / "s.nlsubj")
    a = np.load(subj / "betas.npy")
    a[17, 4] = np.nan
    np.save(subj / "betas.npy", a)
    refused(tmp_path, "import", subj, "--out", tmp_path / "o.nlsubj", "--json-events", "--zscore", "none",
            names=["betas.npy", "betas", "row 17"])


# --- NIfTI / BIDS ----------------------------------------------------------------------------------------------------
def _png_header_bomb(p):
    """A valid PNG whose header declares 100,000 × 100,000 pixels (a decompression bomb's signature)."""
    data = bytearray(p.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", 100_000, 100_000)
    crc = zlib.crc32(bytes(data[ihdr: ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", crc)
    p.write_bytes(bytes(data))


def _huge_nifti(folder):
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000, 100))
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), code=4)
    (folder / "betas.nii.gz").unlink()
    with open(folder / "betas.nii", "wb") as f:
        f.write(hdr.binaryblock + b"\0\0\0\0" + b"\0" * 1024)


def _complex_nifti(folder):
    import nibabel as nib

    img = nib.load(str(folder / "betas.nii.gz"))
    data = np.asarray(img.dataobj).astype(np.complex64)
    new = nib.Nifti1Image(data, img.affine, img.header)
    new.set_data_dtype(np.complex64)
    nib.save(new, str(folder / "betas.nii.gz"))


NIFTI_CASES = {
    "events-no-stim-file": ("events.tsv", lambda f: (f / "events.tsv").write_text("onset\tsplit\n0\ttrain\n")),
    "stimulus-decompression-bomb": ("img000.png", lambda f: _png_header_bomb(f / "stimuli" / "img000.png")),
    "stimulus-not-an-image": ("img001.png", lambda f: (f / "stimuli" / "img001.png").write_text("hello")),
    "betas-declare-3-terabytes": ("betas.nii", _huge_nifti),
    "betas-complex": ("betas.nii.gz", _complex_nifti),
    "labels-tsv-garbage": ("labels.tsv", lambda f: (f / "labels.tsv").write_text("index\tname\nx\tV1\n")),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", NIFTI_CASES)
def test_hostile_nifti_folders_are_refused(case, command, tmp_path):
    name, edit = NIFTI_CASES[case]
    F.write_nifti(tmp_path / "bids")
    edit(tmp_path / "bids")
    refused(tmp_path, *_argv(command, tmp_path / "bids", tmp_path, "--format", "nifti"), names=[name])


def test_excel_saved_events_tsv_with_bom_and_crlf_imports(tmp_path):
    F.write_nifti(tmp_path / "bids")
    ev = tmp_path / "bids" / "events.tsv"
    ev.write_bytes(b"\xef\xbb\xbf" + ev.read_text().replace("\n", "\r\n").encode())
    res = run_cli("import", tmp_path / "bids", "--out", tmp_path / "b.nlsubj", "--json-events")
    assert res.rc == 0, str(res)


# --- paths and options -----------------------------------------------------------------------------------------------
def test_symlink_loop_as_source(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for command in COMMANDS:
        refused(tmp_path, *_argv(command, tmp_path / "loop", tmp_path), names=["loop"])


def test_symlink_loop_as_output(base, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    refused(tmp_path, "import", base["subject"], "--out", tmp_path / "loop", "--overwrite", names=["loop"])


@pytest.mark.parametrize("where", ["the-source", "parent-of-source", "grandparent-of-source"])
def test_overwrite_never_replaces_the_source_or_a_folder_holding_it(where, base, tmp_path):
    nest = tmp_path / "a" / "b"
    nest.mkdir(parents=True)
    subj = copy_of(base["subject"], nest / "s.nlsubj")
    out = {"the-source": subj, "parent-of-source": nest, "grandparent-of-source": tmp_path / "a"}[where]
    refused(tmp_path, "import", subj, "--out", out, "--overwrite", "--json-events", names=[str(out), "input"])


def test_overwrite_never_replaces_the_mapping_folder(tmp_path):
    info = F.write_arrays(tmp_path / "src", "npz")
    refused(tmp_path, "import", info["path"], "--mapping", info["mapping"], "--out", tmp_path / "src", "--overwrite",
            "--json-events", names=["src", "input"])


def test_overwrite_refuses_a_folder_that_is_not_a_subject(base, tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    refused(tmp_path, "import", base["subject"], "--out", mine, "--overwrite", "--json-events",
            names=[str(mine), "subject.json"])


def test_overwrite_refuses_a_file(base, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    refused(tmp_path, "import", base["subject"], "--out", tmp_path / "notes.txt", "--overwrite", "--json-events",
            names=["notes.txt"])


def test_existing_subject_needs_overwrite_and_is_then_replaced(base, tmp_path):
    first = copy_of(base["subject"], tmp_path / "old.nlsubj")
    refused(tmp_path, "import", base["subject"], "--out", first, "--json-events", names=[str(first), "--overwrite"])
    before = tree_hash(first)
    res = run_cli("import", base["subject"], "--out", first, "--overwrite", "--json-events")
    assert res.rc == 0, str(res)
    assert tree_hash(first) != before and run_cli("inspect", first).rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.nlsubj"]  # no .partial or .old left


@pytest.mark.parametrize("argv,name", [
    (("--option", "colour=red"), "colour"),
    (("--option", "novalue"), "novalue"),
    (("--format", "bogus"), "bogus"),
    (("--rois", "nope"), "nope"),
    (("--subject", "3"), "subject"),
])
def test_bad_options(argv, name, base, tmp_path):
    refused(tmp_path, "import", base["subject"], "--out", tmp_path / "o.nlsubj", "--json-events", *argv, names=[name])


def test_missing_source(tmp_path):
    for command in COMMANDS:
        refused(tmp_path, *_argv(command, tmp_path / "nope.nlsubj", tmp_path), names=["nope.nlsubj"])
