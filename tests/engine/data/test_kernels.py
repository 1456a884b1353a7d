"""The fused native moments kernel (``_kernels.c``) against float64 numpy, and the load paths that rely on it."""

from __future__ import annotations

import os
import platform
import shutil

import numpy as np
import pytest

from engine.data.readers import kernels
from engine.errors import SubjectFormatError
from tests.engine.data import fixtures as F

try:
    from engine.data.readers import _kernels as native
except ImportError:  # built by setup.py where a C compiler exists; the first test says whether it should be here
    native = None
needs_native = pytest.mark.skipif(native is None, reason="native kernel not built (no C compiler)")
uses_native = pytest.mark.skipif(not kernels.native_kernels(), reason="the loader does not use the native kernel here "
                                 "(not built, no AVX + F16C, or NEUROLENS_NATIVE_KERNELS=0)")


def _cpu_has_vector_path() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return {"avx", "f16c", "fma"} <= set(flags)


def test_the_native_kernel_is_in_use_where_it_can_be():
    """setup.py must build it wherever a C compiler exists, and an AVX + F16C CPU must take the vector path."""
    if platform.machine() not in ("x86_64", "AMD64") or not _cpu_has_vector_path():
        pytest.skip("not an x86-64 CPU with AVX + F16C")
    if os.environ.get("NEUROLENS_NATIVE_KERNELS") == "0":
        pytest.skip("turned off with NEUROLENS_NATIVE_KERNELS=0")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: the install falls back to the torch path")
    assert native is not None, "setup.py did not build engine.data.readers._kernels"
    assert native.vector_path() and kernels.native_kernels()


def _reference(block, shift, weight):
    d = block.astype(np.float64) - shift
    return (weight[:, None] * d).sum(0), (weight[:, None] * d * d).sum(0)


@needs_native
@pytest.mark.parametrize("vector", [True, False], ids=["avx", "portable"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "<f2", "<f4"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 31), (9, 32), (300, 100), (40, 1000)])
def test_sums_match_float64_numpy(vector, dtype, rows, cols):
    """Every path (vector strips, the tail columns, chunks over 256 rows) gives the float64 sums to float32 accuracy."""
    if vector and not native.vector_path():
        pytest.skip("this CPU has no AVX + F16C")
    rng = np.random.default_rng(rows * 1000 + cols)
    block = (rng.standard_normal((rows, cols)) * 3 + 2).astype(dtype)
    block.flat[:: 5] = -0.0
    if block.dtype.itemsize == 2 and block.size > 3:
        block.flat[1] = 3e-6  # a float16 subnormal
    shift = rng.standard_normal(cols).astype(np.float32)
    weight = (rng.random(rows) < 0.7).astype(np.float32)
    s1, s2 = np.full(cols, 1.5), np.full(cols, 2.5)  # sums accumulate into what is there
    maxabs = native.shifted_moments(block, shift, weight, s1, s2, vector=vector)
    e1, e2 = _reference(block, shift, weight)
    np.testing.assert_allclose(s1 - 1.5, e1, rtol=1e-5, atol=1e-4 * max(rows, 1))
    np.testing.assert_allclose(s2 - 2.5, e2, rtol=1e-5, atol=1e-4 * max(rows, 1))
    assert maxabs == (0.0 if block.dtype.itemsize == 2 else float(np.abs(block).max()))


@uses_native
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("where", [(3, 5), (3, 40), (0, 0)], ids=["vector-col", "tail-col", "first"])
def test_a_non_finite_value_in_any_row_makes_the_sums_non_finite(bad, dtype, where):
    """Validation rides on the sums: a NaN/Inf in an uncounted row (weight 0) must show as well as in a counted one."""
    block = np.ones((6, 41), dtype)
    block[where] = bad
    for counted in (True, False):
        weight = np.ones(6, np.float32)
        weight[where[0]] = 1.0 if counted else 0.0
        s1, s2 = np.zeros(41), np.zeros(41)
        kernels.shifted_moments(block, np.zeros(41, np.float32), weight, s1, s2)
        assert not np.isfinite(s1).all()
        assert np.isfinite(np.delete(s1, where[1])).all()  # only that voxel's sums
    assert np.isnan(kernels.finite_max_abs(block))
    assert kernels.finite_max_abs(np.ones((6, 41), dtype)) == (0.0 if dtype == np.float16 else 1.0)


@needs_native
def test_wrong_arguments_are_refused_before_anything_is_written():
    block = np.ones((4, 8), np.float32)
    good = dict(shift=np.zeros(8, np.float32), weight=np.ones(4, np.float32), s1=np.zeros(8), s2=np.zeros(8))
    cases = [
        (dict(block=np.ones((4, 8), np.float64)), "block"),
        (dict(block=np.ones(8, np.float32)), "block"),
        (dict(shift=np.zeros(7, np.float32)), "shift"),
        (dict(weight=np.ones(4, np.float64)), "weight"),
        (dict(s1=np.zeros(8, np.float32)), "s1"),
        (dict(block=np.ones((4, 16), np.float32)[:, ::2]), "contiguous"),
    ]
    for change, what in cases:
        args = {"block": block, **good, **change}
        with pytest.raises((ValueError, BufferError), match=what):
            native.shifted_moments(args["block"], args["shift"], args["weight"], args["s1"], args["s2"])
    readonly = np.zeros(8)
    readonly.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        native.shifted_moments(block, good["shift"], good["weight"], readonly, good["s2"])
    assert not good["s1"].any() and not good["s2"].any()


def _nsd_betas(tmp_path, edit=None):
    import h5py

    info = F.write_nsd(tmp_path / "nsd", n_voxels=70)
    path = tmp_path / "nsd" / "betas_all_subj01_fp32_renorm.hdf5"
    if edit is not None:
        with h5py.File(path, "r+") as f:
            edit(f["betas"])
    return info, path


@uses_native
def test_zscore_statistics_agree_with_and_without_the_native_kernel(tmp_path, monkeypatch):
    from engine.data import open_subject
    from engine.data.preprocess import zscore

    info, _ = _nsd_betas(tmp_path)
    s = open_subject(info["path"])
    X = np.asarray(s.betas, np.float64)
    train = np.asarray(s.trials.split) == 0
    for scope in ("voxel", "session", "global"):
        fast = zscore(s, scope)
        monkeypatch.setattr(kernels, "_native", None)
        slow = zscore(s, scope)
        monkeypatch.undo()
        step_fast, step_slow = fast.provenance["preprocessing"][-1], slow.provenance["preprocessing"][-1]
        if scope == "global":
            assert (step_fast["mean"], step_fast["std"]) == pytest.approx((step_slow["mean"], step_slow["std"]), rel=1e-5)
        assert {k: v for k, v in step_fast.items() if k not in ("mean", "std")} == \
            {k: v for k, v in step_slow.items() if k not in ("mean", "std")}
        np.testing.assert_allclose(np.asarray(fast.betas, np.float32), np.asarray(slow.betas, np.float32), atol=2e-3)
    z = np.asarray(zscore(s, "voxel").betas, np.float64)
    want = (X - X[train].mean(0)) / X[train].std(0)
    np.testing.assert_allclose(z, want, atol=4e-3, rtol=2e-3)  # float16 output


@uses_native
def test_certified_blocks_skip_the_validation_pass_and_bad_rows_are_still_named(tmp_path, monkeypatch):
    """The fused pass replaces the loader's own check; a NaN in a test trial (a row the statistics skip) or a value
    beyond float16 in the float32 release file is still reported with its row."""
    from engine.data import open_subject
    from engine.data.preprocess import zscore
    from engine.data.readers import lazy

    calls = []
    monkeypatch.setattr(lazy, "minmax", lambda b: calls.append(len(b)) or kernels.minmax(b))
    info, path = _nsd_betas(tmp_path)
    zscore(open_subject(info["path"]), "voxel")
    assert calls == []  # every block certified by the statistics pass

    s = open_subject(info["path"])
    test_row = int(np.flatnonzero(np.asarray(s.trials.split) == 1)[0])
    file_row = int(s.betas.rows[test_row]) if s.betas.rows is not None else test_row
    for value, message in ((np.nan, f"row {file_row} holds NaN"), (1e6, "too large for float16")):
        def edit(ds, value=value):
            ds[file_row, 66] = value  # a tail column of a 70-voxel row

        info, path = _nsd_betas(tmp_path / str(value), edit)
        with pytest.raises(SubjectFormatError, match=message) as e:
            zscore(open_subject(info["path"]), "voxel")
        assert path.name in str(e.value) and "betas" in str(e.value)
