"""NSD in the MindEyeV2 layout: counts, splits, repeats, ROIs, image order, lazy rows, import round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.cli.main import main
from engine.data import detect_format, open_subject
from engine.data.readers import nsd
from engine.errors import SubjectFormatError
from tests.engine.data import fixtures as F


@pytest.fixture(scope="module")
def nsd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd")
    info = F.write_nsd(root)
    return info


def test_detects_and_opens_with_the_right_counts(nsd_root):
    root = nsd_root["path"]
    assert detect_format(root) == "nsd"
    assert detect_format(root / "betas_all_subj01_fp32_renorm.hdf5") == "nsd"
    s = open_subject(root)
    summ = s.summary()
    assert (s.n_trials, s.n_voxels) == (nsd_root["n_trials"], 40)
    assert summ["splits"] == {"train": nsd_root["n_train_trials"], "test": nsd_root["n_test_trials"]}
    assert summ["n_test_images"] == nsd_root["n_test_images"] and summ["repeats"] == 3
    assert summ["n_sessions"] == 3
    assert list(s.rois) == list(F.NSD_ROIS)
    assert s.n_images == nsd_root["n_used_images"]
    steps = [p["step"] for p in summ["preprocessing"]]
    assert steps == ["zscore", "test_set"]


def test_trials_point_at_their_73k_images_in_ascending_order(nsd_root):
    s = open_subject(nsd_root["path"])
    kid = np.array([int(x) for x in s.stimuli.source_ids])
    assert np.all(np.diff(kid) > 0)  # ascending 73KID
    # trial order = global trial order, so trial t shows the fixture's image row kid_rows[t]
    assert np.array_equal(kid[s.trials.image_index] - 1, nsd_root["kid_rows"])
    want = np.clip(np.rint(np.moveaxis(nsd_root["images"][kid[3] - 1], 0, -1).astype(np.float32) * 255), 0, 255)
    assert np.array_equal(s.images[3], want.astype(np.uint8))
    assert s.images.dtype == np.uint8 and s.images[[5, 1, 5]].shape == (3, 8, 8, 3)
    assert np.array_equal(s.images[[5, 1, 5]][0], s.images[5])
    assert s.images[2:4].shape == (2, 8, 8, 3) and len(s.images) == s.n_images


def test_betas_are_lazy_float16_rows(nsd_root):
    s = open_subject(nsd_root["path"])
    assert s.betas.dtype == np.float16 and s.betas.shape == (36, 40)
    full = s.betas.load()
    np.testing.assert_array_equal(full, nsd_root["betas"].astype(np.float16))
    np.testing.assert_array_equal(s.betas[[7, 2, 7]], full[[7, 2, 7]])
    np.testing.assert_array_equal(s.betas[3:9], full[3:9])


def test_old_test_set_selects_only_its_rows(nsd_root):
    s = open_subject(nsd_root["path"], test_set="test")
    assert s.summary()["splits"]["test"] == nsd_root["n_old_test_trials"]
    assert s.n_trials == nsd_root["n_train_trials"] + nsd_root["n_old_test_trials"]
    rows = s.betas.rows
    np.testing.assert_array_equal(s.betas.load(), nsd_root["betas"][rows].astype(np.float16))
    assert s.provenance["dataset"]["test_set"] == "test"


def test_import_and_inspect_round_trip(nsd_root, tmp_path, capsys):
    out = tmp_path / "nsd.nlsubj"
    assert main(["import", str(nsd_root["path"]), "--out", str(out), "--zscore", "none"]) == 0
    capsys.readouterr()
    s = open_subject(out)
    np.testing.assert_array_equal(np.asarray(s.betas), nsd_root["betas"].astype(np.float16))
    assert s.images.shape == (nsd_root["n_used_images"], 8, 8, 3)
    assert main(["inspect", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["repeats"] == 3 and d["rois"]["nsd_general"] == 40
    assert [p["step"] for p in d["preprocessing"]] == ["zscore", "test_set"]


def test_several_subjects_need_a_choice(tmp_path, capsys):
    F.write_nsd(tmp_path, subject=1)
    F.write_nsd(tmp_path, subject=2, seed=1)
    with pytest.raises(SubjectFormatError, match="several NSD subjects"):
        nsd.read(tmp_path)
    assert nsd.read(tmp_path, subject=2).name == "nsd-subj02"
    assert main(["inspect", str(tmp_path), "--subject", "2", "--option", "test_set=test", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "nsd-subj02" and d["preprocessing"][1]["name"] == "test"


def test_without_mask_file_the_roi_is_nsdgeneral(tmp_path):
    F.write_nsd(tmp_path, masks=False)
    s = open_subject(tmp_path)
    assert list(s.rois) == ["nsd_general"] and s.rois["nsd_general"].all()


@pytest.mark.parametrize("block_rows", [1, 5, 1000])
def test_block_pipelined_load_matches_the_file_and_feeds_every_block_once(nsd_root, block_rows):
    from engine.data.readers.lazy import LazyBetas, _raw_offset
    import h5py

    path = nsd_root["path"] / "betas_all_subj01_fp32_renorm.hdf5"
    with h5py.File(path) as f:
        assert _raw_offset(f["betas"]) is not None  # the release layout: one contiguous block, read with plain reads
    lb = LazyBetas(path, "betas", block_rows=block_rows)
    seen = []
    out = lb.load(on_block=lambda b, s: seen.append((s, b.dtype, b.copy())))
    np.testing.assert_array_equal(out, nsd_root["betas"].astype(np.float16))
    assert [s for s, _, _ in seen] == list(range(0, 36, block_rows))
    assert all(dt == np.float32 for _, dt, _ in seen)  # blocks come in the file's dtype
    np.testing.assert_array_equal(np.concatenate([b for _, _, b in seen]), nsd_root["betas"].astype(np.float32))
    rows = np.arange(4, 20)  # a row subset: contiguous, read from its offset
    np.testing.assert_array_equal(LazyBetas(path, "betas", rows=rows, block_rows=block_rows).load(), out[4:20])


def test_data_block_cut_short_or_holding_nan_gives_a_clear_error(tmp_path):
    from engine.data.readers.lazy import LazyBetas
    import h5py

    info = F.write_nsd(tmp_path / "nsd")
    path = tmp_path / "nsd" / "betas_all_subj01_fp32_renorm.hdf5"
    with h5py.File(path, "r+") as f:
        f["betas"][30, 7] = np.nan  # a late block: the error comes from the helper thread
    with pytest.raises(SubjectFormatError, match="row 30 holds NaN") as e:
        LazyBetas(path, "betas", block_rows=4).load()
    assert "betas" in str(e.value) and path.name in str(e.value)
    with h5py.File(path, "r+") as f:
        f["betas"][30, 7] = 0.0
        end = f["betas"].id.get_offset() + f["betas"].id.get_storage_size()
    with open(path, "r+b") as fh:  # cut the file inside the data block (the HDF5 header stays readable)
        fh.truncate(end - 40 * 4 * 3)
    with pytest.raises(SubjectFormatError, match="truncated"):
        LazyBetas(path, "betas", block_rows=4).load()
    assert info["n_trials"] == 36


def test_a_read_that_ends_early_names_the_file_and_key(tmp_path):
    from engine.data.readers.lazy import _pread_into

    p = tmp_path / "short.bin"
    p.write_bytes(np.arange(10, dtype=np.float32).tobytes())
    dst = np.empty(4, np.float32)
    with open(p, "rb", buffering=0) as raw:
        _pread_into(raw, dst, 8, p, "betas")
        np.testing.assert_array_equal(dst, [2, 3, 4, 5])
        with pytest.raises(SubjectFormatError, match="ends 8 bytes early") as e:
            _pread_into(raw, dst, 32, p, "betas")
    assert "short.bin" in str(e.value) and "betas" in str(e.value)


def test_column_reads_select_in_the_file_and_match_numpy(nsd_root, monkeypatch):
    """One voxel over all trials (the voxel inspector) reads that column, not the whole matrix."""
    from engine.data.readers import lazy

    s = open_subject(nsd_root["path"])
    full = s.betas.load()
    seen = []
    real = lazy.h5_read
    monkeypatch.setattr(lazy, "h5_read", lambda ds, p, k, sel=(): seen.append(sel) or real(ds, p, k, sel))
    for sel in ((slice(None), 5), (slice(None), -1), (slice(2, 9), slice(3, 7)), ([7, 2, 7], 4), (3, 8),
                (slice(None), slice(None, None, 5))):
        got = s.betas[sel]
        want = full[sel[0]][..., sel[1]] if not isinstance(sel[0], int) else full[sel[0]][sel[1]]
        np.testing.assert_array_equal(got, want, err_msg=str(sel))
    assert all(isinstance(x, tuple) and len(x) == 2 for x in seen)  # every read carried its column selection
    np.testing.assert_array_equal(s.betas[[1, 0], np.array([2, 0])], full[[1, 0]][:, [2, 0]])  # numpy fallback
    with pytest.raises(IndexError):
        s.betas[:, 40]
