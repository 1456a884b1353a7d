"""Plain arrays + mapping file: npz, MATLAB v5, MATLAB v7.3 (column-major HDF5), h5; plus property-based fuzzing."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.data import detect_format, open_subject
from engine.data.mapping import MappingConfig, load_mapping, parse_mapping
from engine.data.native import read_native, write_subject
from engine.data.readers import arrays
from engine.errors import ConfigError, NeuroLensError, SubjectFormatError
from tests.engine.data import fixtures as F


@pytest.mark.parametrize("kind", ["npz", "mat5", "mat73", "h5"])
def test_every_container_gives_the_same_subject(kind, tmp_path):
    info = F.write_arrays(tmp_path, kind)
    assert detect_format(info["path"]) == "arrays"
    s = open_subject(info["path"], mapping=info["mapping"])
    ref = F.array_content()
    np.testing.assert_allclose(s.betas[:16], ref["fmri_train"].astype(np.float32))
    np.testing.assert_allclose(s.betas[16:], ref["fmri_test"].astype(np.float32))
    assert np.array_equal(s.images[:16], ref["stim_train"]) and np.array_equal(s.images[16:], ref["stim_test"])
    assert np.array_equal(s.trials.image_index[16:], ref["lab_test"] + 16)
    sm = s.summary()
    assert sm["splits"] == {"train": 16, "test": 8} and sm["repeats"] == 2 and sm["rois"] == {"V1": 6}
    np.testing.assert_allclose(s.voxels.noise_ceiling, ref["nc"].astype(np.float32))
    assert s.provenance["reversed_axes"] is (kind == "mat73")


def test_mapping_file_as_source_json_and_all_plus_split(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((10, 5)).astype(np.float32)
    imgs = rng.random((4, 3, 6, 6)).astype(np.float32)  # NCHW in [0, 1]
    np.savez(tmp_path / "d.npz", X=X, imgs=imgs, idx=np.array([0, 1, 2, 3, 0, 1, 2, 3, 3, 3]),
             sp=np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1]), ses=np.repeat([1, 2], 5))
    m = {"file": "d.npz", "betas": {"all": "X", "split": "sp"}, "images": {"all": "imgs", "layout": "NCHW", "range": "0-1"},
         "trials": {"image_index": "idx", "session": "ses"}, "name": "sub-x"}
    (tmp_path / "m.json").write_text(json.dumps(m))
    assert detect_format(tmp_path / "m.json") == "arrays"
    s = open_subject(tmp_path / "m.json")
    assert s.name == "sub-x" and s.summary()["splits"] == {"train": 6, "test": 4} and s.summary()["n_sessions"] == 2
    want = np.rint(np.moveaxis(imgs, 1, -1) * 255).astype(np.uint8)
    assert np.array_equal(s.images, want)
    assert list(s.rois) == ["all"]


def test_missing_mapping_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(SubjectFormatError, match="mapping file"):
        open_subject(tmp_path / "x.npz")


def test_mapping_parse_round_trip(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("betas: {train: a}\nimages: {train: b, layout: hwcn}\ntrials: {index_base: 1}\n")
    m = load_mapping(p)
    assert isinstance(m, MappingConfig) and m.layout == "HWCN" and m.index_base == 1 and m.betas_test is None


# --- property-based fuzzing --------------------------------------------------------------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=6),
                     st.sampled_from(["fmri_train", "stim_train", "NHWC", "HWCN", "0-1", "auto", "F"]))
_values = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), c, max_size=3)), max_leaves=8)
_keys = st.sampled_from(["version", "file", "name", "memory_order", "betas", "images", "trials", "rois", "labels",
                         "categories", "noise_ceiling", "bogus"])
_section = st.dictionaries(st.sampled_from(["train", "test", "all", "split", "layout", "range", "index_base",
                                            "image_index", "file", "x"]), _values, max_size=4)


@settings(max_examples=60, deadline=None)
@given(st.one_of(_values, st.dictionaries(_keys, st.one_of(_values, _section), max_size=6)))
def test_fuzzed_mapping_is_parsed_or_refused_with_config_error(d):
    try:
        m = parse_mapping(d, Path("fuzz.yaml"))
    except ConfigError as e:
        assert "fuzz.yaml" in str(e) and "\n" not in str(e)
        return
    assert m.betas_train or m.betas_all


_dtypes = st.sampled_from([np.float64, np.float32, np.float16, np.int16, np.uint8, np.bool_])


@st.composite
def _contents(draw):
    n_tr = draw(st.integers(0, 6))
    n_te = draw(st.integers(0, 4))
    v = draw(st.integers(0, 5))
    c = {"fmri_train": np.random.default_rng(draw(st.integers(0, 9))).standard_normal((n_tr, v)).astype(draw(_dtypes))}
    if draw(st.booleans()):
        c["fmri_train"] = c["fmri_train"].reshape(-1)
    c["fmri_test"] = np.zeros((n_te, draw(st.sampled_from([v, v + 1]))), draw(_dtypes))
    if draw(st.booleans()) and c["fmri_test"].size and c["fmri_test"].dtype.kind == "f":
        c["fmri_test"].flat[0] = draw(st.sampled_from([np.nan, np.inf, 1.0]))
    shape = draw(st.sampled_from([(n_tr, 4, 4, 3), (n_tr, 4, 4), (max(n_tr, 1), 3), (n_tr, 4, 4, 2), (0, 4, 4, 3)]))
    c["stim_train"] = (np.random.default_rng(0).random(shape) * draw(st.sampled_from([1.0, 255.0, 1000.0, -2.0])))
    c["stim_test"] = np.zeros((draw(st.integers(0, 3)), 4, 4, 3), np.uint8)
    c["lab_test"] = np.array(draw(st.lists(st.integers(-2, 4), min_size=n_te, max_size=n_te + 1)), np.int64)
    c["roi_v1"] = np.array(draw(st.lists(st.booleans(), min_size=v, max_size=v + 1)), bool)
    c["nc"] = np.linspace(0, draw(st.sampled_from([1.0, 5.0])), max(v, 1))
    return c


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_contents(), st.sampled_from(["npz", "mat73", "h5"]))
def test_fuzzed_arrays_import_or_fail_cleanly(content, kind):
    with tempfile.TemporaryDirectory() as d:
        try:
            info = F.write_arrays(Path(d), kind, content=content)
        except (ValueError, TypeError):
            return  # the container itself cannot hold this content (e.g. empty MATLAB arrays)
        try:
            s = arrays.read(info["path"], mapping=info["mapping"])
        except NeuroLensError as e:
            assert "\n" not in str(e)
            return
        out = write_subject(s, Path(d) / "s.nlsubj")
        back = read_native(out)
        assert back.n_trials == s.n_trials and np.isfinite(np.asarray(back.betas, np.float32)).all()


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["npz", "mat5", "mat73", "h5"]), st.floats(0.0, 1.0), st.binary(min_size=1, max_size=8))
@example("mat5", 0.02, b"\x00" * 7)  # scipy's reader raised UnboundLocalError on this one (found in CI)
def test_corrupted_bytes_never_crash(kind, where, junk):
    with tempfile.TemporaryDirectory() as d:
        info = F.write_arrays(Path(d), kind)
        data = bytearray(info["path"].read_bytes())
        pos = int(where * (len(data) - 1))
        data[pos : pos + len(junk)] = junk
        info["path"].write_bytes(bytes(data))
        try:
            s = arrays.read(info["path"], mapping=info["mapping"])
        except NeuroLensError as e:
            assert str(info["path"]) in str(e) or "mapping" in str(e)
            return
        assert s.n_trials == 24 and np.isfinite(np.asarray(s.betas)).all()
