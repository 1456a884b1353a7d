"""Benchmark: opening, loading and z-scoring an NSD-sized subject in the MindEyeV2 layout, against a bare h5py read.

Writes a synthetic subject in the real layout to a temporary folder (``betas_all_subj01_fp32_renorm.hdf5``:
30,000 × 15,724 like the release, as float16 — the issue's benchmark file, 0.94 GB — and as float32 like the release,
1.9 GB; 40 session tars + ``new_test`` with the 17-column behaviour arrays; a small-resolution
``coco_images_224_float16.hdf5`` with all 73,000 rows), then measures in one process, per file dtype:

- ``bare_read_s``: ``h5py.File(...)["betas"][()]`` (the file's dtype, the reference),
- ``open_summary_s``: ``open_subject`` + ``summary()`` (reads the tars and headers, not the betas),
- ``load_s``: ``subject.betas.load()`` (float16, every block validated),
- ``load_zscore_s``: ``preprocess.zscore(subject)`` on the lazy subject (load + voxel-wise z-score, train statistics),
- peak memory allocated (tracemalloc, in a separate untimed run) by the bare read, the load, and load + z-score.

Each timed phase runs ``--repeats`` times, interleaved (the best is kept; the file is in the page cache after
writing). Prints one JSON object and writes it to ``benchmarks/results/bench_data_load.json``. ``--small`` runs a
3,000 × 2,000 version in seconds; ``--dtype`` picks one file dtype.

Goals (issue 3): load + z-score within 1.3× the bare read; peak memory within 1.5× the float16 array.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import tracemalloc
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import report  # noqa: E402 - needs the path above


def traced_peak(fn) -> int:
    """Peak bytes allocated while ``fn()`` runs (tracemalloc sees numpy's and h5py's array buffers)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    r = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    del r
    tracemalloc.stop()
    gc.collect()
    return int(peak)


def _npy(a) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=False)
    return b.getvalue()


def write_layout(root: Path, n_sessions: int, n_voxels: int, n_shared: int, seed: int = 0,
                 dtype=np.float32) -> dict:
    """The MindEyeV2 files of one subject (750 trials per session; shared images shown 3 times)."""
    import h5py

    rng = np.random.default_rng(seed)
    tps = 750
    n_trials = n_sessions * tps
    n_kid = 73000
    shared_rows = rng.choice(n_kid, n_shared, replace=False)
    shared = np.zeros(n_kid, bool)
    shared[shared_rows] = True
    n_train_img = (n_trials - 3 * n_shared) // 3
    train_rows = rng.choice(np.flatnonzero(~shared), n_train_img, replace=False)
    kid = np.concatenate([np.repeat(shared_rows, 3), np.repeat(train_rows, 3)])
    kid = np.concatenate([kid, rng.choice(train_rows, n_trials - len(kid))])
    rng.shuffle(kid)
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "betas_all_subj01_fp32_renorm.hdf5", "w") as f:
        ds = f.create_dataset("betas", shape=(n_trials, n_voxels), dtype=dtype)  # contiguous, like the release
        for s in range(0, n_trials, 1000):
            e = min(n_trials, s + 1000)
            ds[s:e] = (rng.standard_normal((e - s, n_voxels), dtype=np.float32) * 1.5 + 0.3).astype(dtype)
    with h5py.File(root / "coco_images_224_float16.hdf5", "w") as f:  # all 73,000 rows, 8×8 instead of 224×224
        f.create_dataset("images", data=rng.random((n_kid, 3, 8, 8)).astype(np.float16))
    np.save(root / "shared1000.npy", shared)
    wds = root / "wds" / "subj01"
    empty15, empty3 = _npy(np.full((15, 17), -1.0)), _npy(np.full((3, 17), -1.0))
    tars = {("train", s): [] for s in range(n_sessions)}
    tars[("new_test", 0)] = []
    for g in range(n_trials):
        ses, t = divmod(g, tps)
        r = np.full(17, -1.0)
        r[[0, 1, 2, 3, 4, 5, 16]] = [kid[g], 1, ses + 1, 1 + t // 62, t + 1, g, float(shared[kid[g]])]
        tars[("new_test", 0) if shared[kid[g]] else ("train", ses)].append(r)
    for (split, i), rows in tars.items():
        p = wds / split / f"{i}.tar"
        p.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(p, "w") as tf:
            for k, r in enumerate(rows):
                for ext, data in (("behav.npy", _npy(r.reshape(1, 17))), ("past_behav.npy", empty15),
                                  ("future_behav.npy", empty15), ("olds_behav.npy", empty3)):
                    info = tarfile.TarInfo(f"sample{k:09d}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return {"n_trials": n_trials, "n_voxels": n_voxels}


def bare_read(path: Path) -> np.ndarray:
    """The reference: the whole betas dataset, in its own dtype, read with h5py."""
    import h5py

    with h5py.File(path, "r") as f:
        return f["betas"][()]


def timed(fn) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    r = fn()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    del r
    gc.collect()
    return dt, dc


def measure(root: Path, info: dict, repeats: int) -> dict:
    """Every timed phase and peak memory on the subject written under ``root``."""
    from engine.data import open_subject
    from engine.data.preprocess import zscore

    betas_path = root / "betas_all_subj01_fp32_renorm.hdf5"
    n_voxels = info["n_voxels"]
    f16_bytes = info["n_trials"] * n_voxels * 2
    res = {"bare": [], "open": [], "load": [], "load_z": []}
    cpu = {"bare": [], "load": [], "load_z": []}
    holder = {}

    def _open():
        holder["s"] = open_subject(root)
        holder["summary"] = holder["s"].summary()

    for _ in range(repeats):  # interleaved, so slow phases of a shared machine hit both sides
        for key, fn in (("bare", None), ("open", _open), ("load", lambda: holder["s"].betas.load()),
                        ("load_z", lambda: zscore(holder["s"], "voxel"))):
            wall, c = timed(lambda: bare_read(betas_path)) if key == "bare" else timed(fn)
            res[key].append(wall)
            if key in cpu:
                cpu[key].append(c)
    s, summary = holder["s"], holder["summary"]

    res["mem_bare"] = [traced_peak(lambda: bare_read(betas_path))]
    res["mem_load"] = [traced_peak(lambda: s.betas.load())]
    res["mem_load_z"] = [traced_peak(lambda: zscore(s, "voxel"))]
    best = {k: min(v) for k, v in res.items()}
    ratio = best["load_z"] / best["bare"]
    return {
        "file_dtype": info["dtype"],
        "betas_file_bytes": betas_path.stat().st_size,
        "float16_array_bytes": f16_bytes,
        "bare_read_s": round(best["bare"], 3),
        "open_summary_s": round(best["open"], 3),
        "load_s": round(best["load"], 3),
        "load_zscore_s": round(best["load_z"], 3),
        "load_zscore_over_bare": round(ratio, 3),
        "load_over_bare": round(best["load"] / best["bare"], 3),
        "load_zscore_over_bare_median_paired": round(float(np.median(np.divide(res["load_z"], res["bare"]))), 3),
        "cpu_s": {k: round(min(v), 3) for k, v in cpu.items()},
        "peak_alloc_bare_bytes": int(best["mem_bare"]),
        "peak_alloc_load_bytes": int(best["mem_load"]),
        "peak_alloc_load_zscore_bytes": int(best["mem_load_z"]),
        "peak_load_zscore_over_float16": round(best["mem_load_z"] / f16_bytes, 3),
        "meets_time_goal": bool(ratio <= 1.3),
        "meets_memory_goal": bool(best["mem_load_z"] / f16_bytes <= 1.5),
        "summary_trials": {"train": summary["splits"]["train"], "test": summary["splits"]["test"],
                           "test_images": summary["n_test_images"], "repeats": summary["repeats"]},
        "all_runs": {k: [round(x, 3) if isinstance(x, float) else int(x) for x in v] for k, v in res.items()},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="4 sessions × 2,000 voxels (seconds)")
    ap.add_argument("--dir", default=None, help="where to write the synthetic files (default: a temp folder)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", choices=("float16", "float32", "both"), default="both",
                    help="the betas file's dtype: float16 (issue 3's benchmark), float32 (the MindEyeV2 release)")
    args = ap.parse_args(argv)
    n_sessions, n_voxels, n_shared = (4, 2000, 100) if args.small else (40, 15724, 1000)
    need = n_sessions * 750 * n_voxels * 4 * 1.3 + 400e6
    parent = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    free = shutil.disk_usage(parent).free
    if free < need:
        raise SystemExit(f"bench_data_load: {parent} has {free / 1e9:.1f} GB free, needs {need / 1e9:.1f} GB")
    import torch

    from engine.data.readers.kernels import native_kernels

    out = {"benchmark": "bench_data_load", "size": "small" if args.small else "full",
           "n_trials": n_sessions * 750, "n_voxels": n_voxels, "goal_time_ratio": 1.3, "goal_memory_ratio": 1.5,
           "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                       "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                       "numpy": np.__version__, "native_kernel": native_kernels()}}
    for dtype in (("float16", "float32") if args.dtype == "both" else (args.dtype,)):
        root = Path(tempfile.mkdtemp(prefix="nl-bench-nsd-", dir=parent))
        try:
            t = time.perf_counter()
            info = write_layout(root, n_sessions, n_voxels, n_shared, dtype=np.dtype(dtype))
            info["dtype"] = dtype
            res = measure(root, info, args.repeats)
            res["write_fixture_s"] = round(time.perf_counter() - t, 2)
            out[dtype] = res
        finally:
            shutil.rmtree(root, ignore_errors=True)
    report(out, "bench_data_load" + ("_small" if args.small else ""))
    return out


if __name__ == "__main__":
    main()
